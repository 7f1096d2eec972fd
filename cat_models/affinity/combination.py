"""Combining affinity matrices: majority vote (paper §3.1), averaging and a weighted vote
(ablations).

Majority vote: for each target class, every method votes for its highest-affinity source class;
a source class with at least 2 votes (the most votes, if more than 3 methods) wins. When the
methods all disagree (or the top vote is tied), the vote of the method with the lowest
*training-free* FID on the target training set decides — the caller passes that ranking
(`fid_ranking`, best first). Without one, `DEFAULT_ORDER` decides: text, then segmentation,
then features, following paper Table 1 where text and segmentation affinities beat the
self-supervised features. The result is binary: one 1 per target column.

A method abstains on a target class it has no evidence for
(`AffinityMatrix.without_evidence`): segmentation and features see only the few-shot images,
and a class those never show gets a flat column, whose argmax (source class 0) is a position,
not a vote. Left to vote, the two image-based methods would agree on source class 0 and
outvote text for every such class; a target set with 150+ classes and 25 images has many.
The paper does not say how its vote treats such classes. If every method abstains, the
tie-break order's first method decides (the weighted vote: the heaviest). The average
skips abstaining columns too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from cat_models.affinity.matrix import AffinityError, AffinityMatrix
from cat_models.affinity.normalise import normalise_columns
from cat_models.affinity.registry import AffinityInputs, register_estimator

DEFAULT_ORDER = ("text", "segmentation", "features")
# Bump when a combination's rule changes its output for the same matrices (caches key on it).
# 2: methods without evidence for a class abstain on it.
RULE_VERSION = 2


def _check_same_classes(matrices: Mapping[str, AffinityMatrix]) -> AffinityMatrix:
    if not matrices:
        raise AffinityError("combination: no affinity matrices given")
    first_name, first = next(iter(matrices.items()))
    for name, m in matrices.items():
        if (m.source_names, m.target_names) != (first.source_names, first.target_names):
            raise AffinityError(
                f"combination: matrix {name!r} has other class names than {first_name!r} "
                f"({m.shape} vs {first.shape}); all must share source and target classes"
            )
    return first


def tie_break_order(methods: Sequence[str], fid_ranking: Sequence[str] | None) -> list[str]:
    """Methods in the order that breaks ties: the FID ranking, then DEFAULT_ORDER, then name."""
    preferred = list(fid_ranking or []) + list(DEFAULT_ORDER)
    rank = {m: preferred.index(m) if m in preferred else len(preferred) for m in methods}
    return sorted(methods, key=lambda m: (rank[m], m))


def majority_vote(matrices: Mapping[str, AffinityMatrix],
                  fid_ranking: Sequence[str] | None = None) -> AffinityMatrix:
    """Binary C_S × C_T matrix from the argmax votes of `matrices` (paper §3.1)."""
    first = _check_same_classes(matrices)
    order = tie_break_order(list(matrices), fid_ranking)
    votes = {m: matrices[m].argmax_source() for m in order}
    abstain = _abstentions(matrices)
    values = np.zeros(first.shape)
    decided_by: dict[str, str] = {}
    for k, target in enumerate(first.target_names):
        voters = [m for m in order if not abstain[m][k]] or order[:1]
        counts = Counter(int(votes[m][k]) for m in voters)
        top = max(counts.values())
        leaders = {c for c, n in counts.items() if n == top}
        if top >= 2 and len(leaders) == 1:
            choice, decided_by[target] = leaders.pop(), "vote"
        else:
            decider = next(m for m in voters if int(votes[m][k]) in leaders)
            choice, decided_by[target] = int(votes[decider][k]), decider
        values[choice, k] = 1.0
    return AffinityMatrix(values, first.source_names, first.target_names, "combination", {
        "methods": list(matrices), "tie_break_order": order,
        "fid_ranking": list(fid_ranking) if fid_ranking else None, "decided_by": decided_by,
        "abstained": _abstained(matrices, abstain),
    })


def _abstentions(matrices: Mapping[str, AffinityMatrix]) -> dict[str, np.ndarray]:
    """Per method, the target classes it abstains on (`AffinityMatrix.without_evidence`)."""
    return {m: matrix.without_evidence() for m, matrix in matrices.items()}


def _abstained(matrices: Mapping[str, AffinityMatrix],
               abstain: Mapping[str, np.ndarray]) -> dict[str, list[str]]:
    """Provenance: target class -> the methods that abstained on it (classes with none left
    out)."""
    first = next(iter(matrices.values()))
    out = {t: [m for m in matrices if abstain[m][k]] for k, t in enumerate(first.target_names)}
    return {t: ms for t, ms in out.items() if ms}


def average_affinity(matrices: Mapping[str, AffinityMatrix],
                     top_k: int | None = None) -> AffinityMatrix:
    """Mean of the (column-normalised) matrices, columns renormalised (ablation of §3.1)."""
    first = _check_same_classes(matrices)
    abstain = _abstentions(matrices)
    stack = np.stack([m.values for m in matrices.values()])             # [M, C_S, C_T]
    keep = ~np.stack([abstain[m] for m in matrices])                    # [M, C_T]
    keep[:, ~keep.any(0)] = True      # no method has evidence: the plain mean of all
    mean = (stack * keep[:, None, :]).sum(0) / keep.sum(0)
    return AffinityMatrix(normalise_columns(mean, top_k=top_k), first.source_names,
                          first.target_names, "average",
                          {"methods": list(matrices), "top_k": top_k,
                           "abstained": _abstained(matrices, abstain)})


def weighted_vote(matrices: Mapping[str, AffinityMatrix], weights: Mapping[str, float]
                  ) -> AffinityMatrix:
    """Binary C_S × C_T matrix: each method's argmax vote counts `weights[method]` (e.g. its
    training-free mIoU); per target class the source class with the largest total wins (ties:
    the heavier method's vote). Ablation of the paper's equal-weight vote: one strong method
    outvotes two weak ones that agree only when its weight exceeds theirs together.
    """
    first = _check_same_classes(matrices)
    missing = sorted(set(matrices) - set(weights))
    if missing:
        raise AffinityError(f"weighted_vote: weights: no weight for {missing}")
    bad = {m: w for m, w in weights.items() if m in matrices and not (np.isfinite(w) and w >= 0)}
    if bad:
        raise AffinityError(f"weighted_vote: weights must be finite and >= 0, got {bad}")
    order = sorted(matrices, key=lambda m: (-weights[m], m))
    votes = {m: matrices[m].argmax_source() for m in order}
    abstain = _abstentions(matrices)
    values = np.zeros(first.shape)
    for k in range(first.shape[1]):
        voters = [m for m in order if not abstain[m][k]] or order[:1]
        totals: dict[int, float] = {}
        for m in voters:
            totals[int(votes[m][k])] = totals.get(int(votes[m][k]), 0.0) + float(weights[m])
        best = max(totals.values())
        choice = next(int(votes[m][k]) for m in voters if totals[int(votes[m][k])] == best)
        values[choice, k] = 1.0
    return AffinityMatrix(values, first.source_names, first.target_names, "weighted_vote", {
        "methods": list(matrices), "weights": {m: float(weights[m]) for m in matrices},
        "abstained": _abstained(matrices, abstain)})


@register_estimator("combination")
def estimate_combination(inputs: AffinityInputs,
                         fid_ranking: Sequence[str] | None = None) -> AffinityMatrix:
    inputs.require("matrices")
    return majority_vote(inputs.matrices, fid_ranking or inputs.fid_ranking)


@register_estimator("average")
def estimate_average(inputs: AffinityInputs, top_k: int | None = None) -> AffinityMatrix:
    inputs.require("matrices")
    return average_affinity(inputs.matrices, top_k)


@register_estimator("weighted_vote")
def estimate_weighted_vote(inputs: AffinityInputs,
                           weights: Mapping[str, float] | None = None) -> AffinityMatrix:
    inputs.require("matrices")
    if weights is None:
        raise AffinityError("weighted_vote: pass weights={method: training-free score}")
    return weighted_vote(inputs.matrices, weights)

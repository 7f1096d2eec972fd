"""Scores (cosines or pixel counts) -> column-normalised affinities (paper §3.1).

Each target column must sum to 1 over the source classes. Cosine similarities can be negative,
so a non-negativity step comes first (`nonnegativity`):

* "clip" (the paper's "A ∝ cos"): negative scores are clipped to 0 and each column is divided
  by its sum. A column with no positive score carries no information and becomes uniform
  (1 / C_S), so the transferred input keeps the source scale.
* "center" (beyond the paper): each column's mean over the source classes is subtracted before
  clipping, so only the source classes *more* similar than average keep weight. Sentence and
  CLIP text embeddings share a large common component (all cosines of the embedded benchmark's
  names lie in 0.31-0.94), and clipped at 0 such cosines give nearly uniform columns: a target
  class drawn as a blend of every source class (benchmarks/RESULTS_fidelity.md).
* "softmax" (beyond the paper): softmax over source classes of `score / temperature`. Small T
  sharpens towards the argmax (T → 0 is one-hot), large T flattens towards uniform. For cosines
  T ≈ 0.05-0.1 gives a few dominant source classes per target class.

Passing a `temperature` selects "softmax" (the older spelling); `nonnegativity=None` means
"clip" without one.

`top_k=k` (beyond the paper) then keeps the k largest weights of each column (ties resolved in
source order) and renormalises, so each target class maps to at most k source classes.
"""

from __future__ import annotations

import numpy as np

from cat_models.affinity.matrix import AffinityError, AffinityMatrix

NONNEGATIVITY = ("clip", "center", "softmax")


def resolve_nonnegativity(nonnegativity: str | None, temperature: float | None) -> str:
    """The mode `normalise_columns` applies: explicit, else softmax with a temperature, else clip."""
    mode = nonnegativity or ("softmax" if temperature is not None else "clip")
    if mode not in NONNEGATIVITY:
        raise AffinityError(f"nonnegativity: expected one of {list(NONNEGATIVITY)}, got {mode!r}")
    if mode == "softmax" and temperature is None:
        raise AffinityError("nonnegativity 'softmax' needs a temperature > 0")
    if mode != "softmax" and temperature is not None:
        raise AffinityError(f"temperature {temperature} applies to 'softmax' only, not {mode!r}")
    return mode


def normalise_columns(scores: np.ndarray, temperature: float | None = None,
                      top_k: int | None = None, nonnegativity: str | None = None) -> np.ndarray:
    """C_S × C_T scores -> non-negative C_S × C_T weights whose columns sum to 1."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or 0 in scores.shape:
        raise AffinityError(f"scores: expected a non-empty C_S × C_T array, got {scores.shape}")
    if not np.isfinite(scores).all():
        raise AffinityError("scores: contain NaN or inf")
    mode = resolve_nonnegativity(nonnegativity, temperature)
    if mode == "clip":
        weights = np.clip(scores, 0.0, None)
    elif mode == "center":
        weights = np.clip(scores - scores.mean(axis=0, keepdims=True), 0.0, None)
    else:
        if temperature <= 0:
            raise AffinityError(f"temperature must be > 0 (or None to clip), got {temperature}")
        logits = scores / temperature
        weights = np.exp(logits - logits.max(axis=0, keepdims=True))
    weights = _unit_columns(weights)
    if top_k is not None:
        weights = _keep_top_k(weights, top_k)
    return weights


def _unit_columns(weights: np.ndarray) -> np.ndarray:
    sums = weights.sum(axis=0, keepdims=True)
    uniform = np.full_like(weights, 1.0 / weights.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums > 0, weights / np.where(sums > 0, sums, 1.0), uniform)


def _keep_top_k(weights: np.ndarray, k: int) -> np.ndarray:
    if k < 1:
        raise AffinityError(f"top_k must be >= 1, got {k}")
    if k >= weights.shape[0]:
        return weights
    order = np.argsort(-weights, axis=0, kind="stable")[:k]
    mask = np.zeros_like(weights, dtype=bool)
    np.put_along_axis(mask, order, True, axis=0)
    return _unit_columns(np.where(mask, weights, 0.0))


def normalise_affinity(affinity: AffinityMatrix, temperature: float | None = None,
                       top_k: int | None = None, nonnegativity: str | None = None
                       ) -> AffinityMatrix:
    """`normalise_columns` on an AffinityMatrix; the options are recorded in its provenance."""
    return affinity.with_values(
        normalise_columns(affinity.values, temperature, top_k, nonnegativity),
        temperature=temperature, top_k=top_k,
        nonnegativity=resolve_nonnegativity(nonnegativity, temperature),
    )

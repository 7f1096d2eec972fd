"""The no-CAT baseline: a random affinity matrix (paper Table 1, "Random").

Entries are drawn uniformly in [0, 1) from a seeded generator and each column is normalised to
sum to 1, so the transferred input has the source scale like any estimated matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cat_models.affinity.matrix import AffinityMatrix
from cat_models.affinity.normalise import normalise_columns
from cat_models.affinity.registry import AffinityInputs, register_estimator


def random_affinity(source_names: Sequence[str], target_names: Sequence[str],
                    seed: int = 0) -> AffinityMatrix:
    """Seeded random C_S × C_T matrix with unit column sums."""
    rng = np.random.default_rng(seed)
    scores = rng.random((len(source_names), len(target_names)))
    return AffinityMatrix(normalise_columns(scores), source_names, target_names, "random",
                          {"seed": seed})


@register_estimator("random")
def estimate_random(inputs: AffinityInputs, seed: int | None = None) -> AffinityMatrix:
    source, target = inputs.names()
    return random_affinity(source, target, inputs.seed if seed is None else seed)

"""Class affinity estimation (paper §3.1): text, segmentation, features, combination.

    from cat_models.affinity import AffinityInputs, estimate_affinity, top_matches
    A = estimate_affinity("text", AffinityInputs(source_names=[...], target_names=[...]))
    A.values          # C_S × C_T, each target column sums to 1
    A.save("A.npy")   # + A.csv (names) + A.json (method, provenance)
"""

from cat_models.affinity.baseline import random_affinity
from cat_models.affinity.combination import DEFAULT_ORDER, average_affinity, majority_vote
from cat_models.affinity.features import class_prototypes, feature_affinity
from cat_models.affinity.matrix import (
    AffinityError,
    AffinityMatrix,
    format_top_matches,
    top_matches,
)
from cat_models.affinity.normalise import normalise_affinity, normalise_columns
from cat_models.affinity.registry import (
    AffinityInputs,
    available_estimators,
    estimate_affinity,
    register_estimator,
)
from cat_models.affinity.segmentation import confusion_counts, segmentation_affinity
from cat_models.affinity.text import text_affinity

__all__ = [
    "DEFAULT_ORDER",
    "AffinityError",
    "AffinityInputs",
    "AffinityMatrix",
    "available_estimators",
    "average_affinity",
    "class_prototypes",
    "confusion_counts",
    "estimate_affinity",
    "feature_affinity",
    "format_top_matches",
    "majority_vote",
    "normalise_affinity",
    "normalise_columns",
    "random_affinity",
    "register_estimator",
    "segmentation_affinity",
    "text_affinity",
    "top_matches",
]

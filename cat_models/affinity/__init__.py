"""Class affinity estimation (paper §3.1): text, segmentation, features, combination.

    from cat_models.affinity import AffinityInputs, estimate_affinity, top_matches
    A = estimate_affinity("text", AffinityInputs(source_names=[...], target_names=[...]))
    A.values          # C_S × C_T, each target column sums to 1
    A.save("A.npy")   # + A.csv (names) + A.json (method, provenance)
"""

from cat_models.lazy import lazy_exports

# Imported when first read (cat_models.lazy): importing one light submodule (a config, the
# registered names) does not load the package's networks and torch.
_EXPORTS = {
    "cat_models.affinity.baseline": ("random_affinity",),
    "cat_models.affinity.combination": ("DEFAULT_ORDER", "average_affinity", "majority_vote"),
    "cat_models.affinity.features": ("class_prototypes", "feature_affinity"),
    "cat_models.affinity.matrix": (
        "AffinityError", "AffinityMatrix", "format_top_matches", "top_matches",
    ),
    "cat_models.affinity.normalise": ("normalise_affinity", "normalise_columns"),
    "cat_models.affinity.registry": (
        "AffinityInputs", "available_estimators", "estimate_affinity", "register_estimator",
    ),
    "cat_models.affinity.segmentation": ("confusion_counts", "segmentation_affinity"),
    "cat_models.affinity.text": ("text_affinity",),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

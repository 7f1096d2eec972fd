"""Evaluation metrics (paper §4.1): FID / KID (clean-fid semantics, offline Inception), mIoU
with a pluggable segmenter, iterations to convergence, and the per-trial `Evaluator`.

Never imports a model family (oasis / piti): metrics run on any generator function.
"""

from cat_models.lazy import lazy_exports

# Imported when first read (cat_models.lazy): importing one light submodule (a config, the
# registered names) does not load the package's networks and torch.
_EXPORTS = {
    "cat_models.metrics.convergence": ("iterations_to_convergence", "moving_average"),
    "cat_models.metrics.evaluator": ("Evaluator", "eval_label_maps"),
    "cat_models.metrics.feature_net": (
        "DEFAULT_NET_ID", "FeatureNet", "FeatureNetError", "load_feature_net",
    ),
    "cat_models.metrics.fid": (
        "FeatureStats", "clean_resize", "fid", "fid_from_features", "inception_features", "kid",
        "kid_from_features", "quantise",
    ),
    "cat_models.metrics.miou": (
        "confusion_matrix", "iou_from_confusion", "label_lut", "mean_iou", "miou",
        "real_image_iou", "real_image_miou", "scores_from_confusion", "segmenter_confusion",
    ),
    "cat_models.metrics.real_stats": ("load_stats", "real_statistics", "stats_path"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

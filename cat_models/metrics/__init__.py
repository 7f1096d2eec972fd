"""Evaluation metrics (paper §4.1): FID / KID (clean-fid semantics, offline Inception), mIoU
with a pluggable segmenter, iterations to convergence, and the per-trial `Evaluator`.

Never imports a model family (oasis / piti): metrics run on any generator function.
"""

from cat_models.metrics.convergence import iterations_to_convergence, moving_average
from cat_models.metrics.evaluator import Evaluator, eval_label_maps
from cat_models.metrics.feature_net import (
    DEFAULT_NET_ID,
    FeatureNet,
    FeatureNetError,
    load_feature_net,
)
from cat_models.metrics.fid import (
    FeatureStats,
    clean_resize,
    fid,
    fid_from_features,
    inception_features,
    kid,
    kid_from_features,
    quantise,
)
from cat_models.metrics.miou import (
    confusion_matrix,
    iou_from_confusion,
    label_lut,
    mean_iou,
    miou,
)
from cat_models.metrics.real_stats import load_stats, real_statistics, stats_path

__all__ = [
    "DEFAULT_NET_ID",
    "Evaluator",
    "FeatureNet",
    "FeatureNetError",
    "FeatureStats",
    "clean_resize",
    "confusion_matrix",
    "eval_label_maps",
    "fid",
    "fid_from_features",
    "inception_features",
    "iou_from_confusion",
    "iterations_to_convergence",
    "kid",
    "kid_from_features",
    "label_lut",
    "load_feature_net",
    "load_stats",
    "mean_iou",
    "miou",
    "moving_average",
    "quantise",
    "real_statistics",
    "stats_path",
]

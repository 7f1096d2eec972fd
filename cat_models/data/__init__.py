"""Datasets in the documented layouts, the embedded benchmark, and few-shot subsets."""

from cat_models.data.cache import CACHE_ENV_VAR, cache_root
from cat_models.data.dataset import (
    SegmentationDataset,
    as_hw,
    label_histograms,
    one_hot,
    open_dataset,
    validate_dataset,
)
from cat_models.data.layouts import (
    DatasetError,
    packaged_class_names,
    read_class_list,
    read_classes_txt,
)
from cat_models.data.subsets import kl_greedy_subset, load_subset, random_subset, save_subset
from cat_models.data.validation import DatasetCheck, check_dataset

__all__ = [
    "CACHE_ENV_VAR",
    "DatasetCheck",
    "DatasetError",
    "SegmentationDataset",
    "as_hw",
    "cache_root",
    "check_dataset",
    "kl_greedy_subset",
    "label_histograms",
    "load_subset",
    "one_hot",
    "open_dataset",
    "packaged_class_names",
    "random_subset",
    "read_class_list",
    "read_classes_txt",
    "save_subset",
    "validate_dataset",
]

"""Datasets in the documented layouts, the embedded benchmark, and few-shot subsets."""

from cat_models.lazy import lazy_exports

# Imported when first read (cat_models.lazy): importing one light submodule (a config, the
# registered names) does not load the package's networks and torch.
_EXPORTS = {
    "cat_models.data.cache": ("CACHE_ENV_VAR", "cache_root"),
    "cat_models.data.dataset": (
        "SegmentationDataset", "as_hw", "label_histograms", "one_hot", "open_dataset",
        "validate_dataset",
    ),
    "cat_models.data.layouts": (
        "DatasetError", "packaged_class_names", "read_class_list", "read_classes_txt",
    ),
    "cat_models.data.subsets": ("kl_greedy_subset", "load_subset", "random_subset",
                                "rare_class_subset", "sample_subset", "save_subset"),
    "cat_models.data.validation": ("DatasetCheck", "check_dataset"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

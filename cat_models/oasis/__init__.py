"""OASIS (Schönfeld et al. 2021) with Class Affinity Transfer (paper §3.2) and the baselines.

Build: `preset`, `build_generator`, `build_discriminator`, `load_official_oasis`.
Transfer: `build_plan(name, G, D, C_T, ...)` with names in `BASELINES`.
Train: `train_oasis(plan, data, cfg, iterations, ...)`, `finetune_oasis`;
`cat_models.oasis.pretrain.pretrain_source` (+ CLI `python -m cat_models.oasis.pretrain`).
Sample: `training_free_generator(source, A)`, `sample_images(G, labels)`.
"""

from cat_models.lazy import lazy_exports

# Imported when first read (cat_models.lazy): importing one light submodule (a config, the
# registered names) does not load the package's networks and torch.
_EXPORTS = {
    "cat_models.oasis.baselines": ("BASELINES", "Stage", "TransferPlan", "build_plan"),
    "cat_models.oasis.config": ("PRESETS", "OasisConfig", "preset"),
    "cat_models.oasis.discriminator": ("OasisDiscriminator", "build_discriminator"),
    "cat_models.oasis.finetune": ("finetune_oasis",),
    "cat_models.oasis.generator": ("OasisGenerator", "build_generator"),
    "cat_models.oasis.official": ("load_official_folder", "load_official_oasis"),
    "cat_models.oasis.pretrain": ("pretrain_source",),
    "cat_models.oasis.sampling": ("sample_images", "training_free_generator"),
    "cat_models.oasis.source": ("SourceModel", "load_source", "save_source"),
    "cat_models.oasis.train": ("TrainState", "load_checkpoint", "save_checkpoint", "train_oasis"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

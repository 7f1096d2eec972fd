"""OASIS (Schönfeld et al. 2021) with Class Affinity Transfer (paper §3.2) and the baselines.

Build: `preset`, `build_generator`, `build_discriminator`, `load_official_oasis`.
Transfer: `build_plan(name, G, D, C_T, ...)` with names in `BASELINES`.
Train: `train_oasis(plan, data, cfg, iterations, ...)`, `finetune_oasis`;
`cat_models.oasis.pretrain.pretrain_source` (+ CLI `python -m cat_models.oasis.pretrain`).
Sample: `training_free_generator(source, A)`, `sample_images(G, labels)`.
"""

from cat_models.oasis.baselines import BASELINES, Stage, TransferPlan, build_plan
from cat_models.oasis.config import PRESETS, OasisConfig, preset
from cat_models.oasis.discriminator import OasisDiscriminator, build_discriminator
from cat_models.oasis.finetune import finetune_oasis
from cat_models.oasis.generator import OasisGenerator, build_generator
from cat_models.oasis.official import load_official_folder, load_official_oasis
from cat_models.oasis.sampling import sample_images, training_free_generator
from cat_models.oasis.source import SourceModel, load_source, save_source
from cat_models.oasis.train import TrainState, load_checkpoint, save_checkpoint, train_oasis

__all__ = [
    "BASELINES",
    "PRESETS",
    "OasisConfig",
    "OasisDiscriminator",
    "OasisGenerator",
    "SourceModel",
    "Stage",
    "TrainState",
    "TransferPlan",
    "build_discriminator",
    "build_generator",
    "build_plan",
    "finetune_oasis",
    "load_checkpoint",
    "load_official_folder",
    "load_official_oasis",
    "load_source",
    "preset",
    "pretrain_source",
    "sample_images",
    "save_checkpoint",
    "save_source",
    "train_oasis",
    "training_free_generator",
]

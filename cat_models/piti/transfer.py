"""What CAT-PITI (paper §3.3) and the PITI baselines change in a pretrained model.

Each change returns a new `PitiModel` (the source is never modified) whose `config` describes
it completely, so `PitiModel(model.config)` rebuilds the same layout and a saved state dict
loads back with strict keys:
- `cat_model`: A prepended to the encoder (`encoder.affinity`, target one-hot -> source
  one-hot, the empty channel to itself); `config.num_classes` becomes C_T and
  `config.source_classes` records C_S. Training-free transfer is this model, unchanged.
- `with_prompts`: P deep prompts per transformer layer (`encoder.prompts`), seeded.
- `reinit_mask_input`: no A; a fresh `encoder.cnn.conv1` reading the target one-hot directly
  (the "finetune all" baseline and the Table 5 rows without CAT).
- `from_generic`: a fresh encoder for the target classes on a generic decoder ("from GLIDE").
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from cat_models.affinity.baseline import random_affinity
from cat_models.piti.encoder import AffinityLayer, MaskEncoder
from cat_models.piti.model import PitiModel


def affinity_values(affinity: Any) -> np.ndarray:
    """A C_S×C_T float array from an `AffinityMatrix` (`.values`) or any array-like."""
    values = np.asarray(getattr(affinity, "values", affinity), dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"affinity: expected a C_S×C_T matrix, got shape {values.shape}")
    return values


def random_values(num_source: int, num_target: int, seed: int = 0) -> np.ndarray:
    """The "Random" A of paper Tables 1 and 3 (same draw as the affinity package's)."""
    names_s = [str(i) for i in range(num_source)]
    names_t = [str(i) for i in range(num_target)]
    return random_affinity(names_s, names_t, seed).values


def _onehot_source(source: PitiModel, what: str) -> None:
    if source.encoder.rgb_input:
        raise ValueError(f"{what}: the source model reads RGB masks; fold its palette first "
                         "(load_official_piti(..., fold=True))")
    if source.config.source_classes is not None:
        raise ValueError(f"{what}: the source model already carries an affinity layer "
                         f"({source.config.source_classes} -> {source.config.num_classes} "
                         "classes); start from the source model itself")


def cat_model(source: PitiModel, target_classes: int, affinity: Any | None = None,
              seed: int = 0) -> PitiModel:
    """Source model with A prepended to its encoder; `affinity` None -> random A (seeded)."""
    _onehot_source(source, "cat_model")
    cs = source.config.num_classes
    values = (random_values(cs, target_classes, seed) if affinity is None
              else affinity_values(affinity))
    if values.shape != (cs, target_classes):
        raise ValueError(f"affinity: expected shape ({cs}, {target_classes}) = (source classes, "
                         f"target classes), got {values.shape}")
    model = copy.deepcopy(source)
    ref = model.encoder.cnn.conv1.weight
    model.encoder.affinity = AffinityLayer(torch.as_tensor(values, dtype=torch.float32,
                                                           device=ref.device))
    model.config = source.config.replace(num_classes=target_classes, source_classes=cs)
    return model


def with_prompts(model: PitiModel, count: int, seed: int = 0) -> PitiModel:
    """Copy of `model` with `count` fresh deep prompts per layer (0 = none), drawn from seed."""
    out = copy.deepcopy(model)
    out.encoder.add_prompts(count, seed)
    out.config = model.config.replace(prompt_count=count, prompt_seed=seed)
    return out


def reinit_mask_input(source: PitiModel, target_classes: int, seed: int = 0) -> PitiModel:
    """Source model whose first encoder layer is re-initialised for the target one-hot
    (paper §4.1, "finetune all": PyTorch's default conv init, seeded)."""
    _onehot_source(source, "reinit_mask_input")
    model = copy.deepcopy(source)
    old = model.encoder.cnn.conv1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.encoder.cnn.conv1 = nn.Conv2d(target_classes + 2, old.out_channels,
                                            old.kernel_size, old.stride, old.padding,
                                            device=old.weight.device, dtype=old.weight.dtype)
    model.config = source.config.replace(num_classes=target_classes)
    return model


def from_generic(generic: PitiModel, target_classes: int, seed: int = 0) -> PitiModel:
    """A new encoder for the target classes (seeded init) on a copy of `generic`'s decoder:
    the "from GLIDE" baseline (paper §4.1; PITI trains such an encoder from scratch)."""
    cfg = generic.config.replace(num_classes=target_classes, source_classes=None,
                                 prompt_count=0)
    model = copy.deepcopy(generic)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ref = generic.decoder.out[-1].weight
        model.encoder = MaskEncoder(cfg).to(device=ref.device, dtype=ref.dtype)
    model.config = cfg
    return model


def training_free_model(source: PitiModel, affinity: Any, seed: int = 0) -> PitiModel:
    """CAT for C_T target classes from a source model + A (C_S×C_T), no finetuning (paper
    §4.3, Table 3): the source network behind the affinity layer, in eval mode."""
    values = affinity_values(affinity)
    return cat_model(source, values.shape[1], values, seed=seed).eval()

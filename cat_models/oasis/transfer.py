"""What CAT (paper §3.2) and the transfer baselines change in a pretrained OASIS model.

Each change is a function returning a new module, so the Table 4 switches are independent:
- `AffinityLayer`: target one-hot (C_T+1 ch) -> source one-hot space (C_S+1 ch). Values are the
  C_S×C_T matrix A on the classes; the unlabeled channel maps to the unlabeled channel with
  weight 1 and to nothing else, i.e. the full (C_S+1)×(C_T+1) matrix is block-diag(1, A). The
  whole matrix is trainable (the unlabeled entries included; they start at the block layout).
  It is applied once, in the generator's `condition`, so every SPADE block (and `fc`) reads the
  same affinity-mapped map: "A prepended to every SPADE label input" with one shared A.
- `CATSPADE`: split scale/shift first convs (both copies of the pretrained `mlp_shared.0`) and
  two zero-initialised residual convs from the target one-hot map added to their outputs.
- `reinit_label_inputs`: for baselines without A — new label columns in `fc` and every
  `mlp_shared.0` (noise columns keep their pretrained weights).
- `replace_d_head`: a fresh (C_T+1)+1-way `layer_up_last`.
- `Miner`: MineGAN's MLP on z (residual, last layer zero-init so it starts at the identity).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cat_models.oasis.discriminator import OasisDiscriminator
from cat_models.oasis.generator import OasisGenerator, expand_noise, init_oasis_weights
from cat_models.oasis.norms import SPADE, clone_module


def affinity_values(affinity: Any) -> np.ndarray:
    """A C_S×C_T float array from an `AffinityMatrix` (`.values`) or any array-like."""
    values = np.asarray(getattr(affinity, "values", affinity), dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"affinity: expected a C_S×C_T matrix, got shape {values.shape}")
    return values


def random_affinity(num_source: int, num_target: int, seed: int = 0) -> np.ndarray:
    """Random non-negative A with columns summing to 1 (paper Table 3 "Random" row)."""
    values = np.random.default_rng(seed).random((num_source, num_target))
    return values / values.sum(axis=0, keepdims=True)


class AffinityLayer(nn.Module):
    """one-hot target [B, C_T+1, H, W] -> source space [B, C_S+1, H, W] (paper §3.2)."""

    def __init__(self, values: np.ndarray) -> None:
        super().__init__()
        cs, ct = values.shape
        full = torch.zeros(cs + 1, ct + 1)
        full[0, 0] = 1.0
        full[1:, 1:] = torch.as_tensor(values, dtype=torch.float32)
        self.weight = nn.Parameter(full)

    def forward(self, label: torch.Tensor) -> torch.Tensor:
        return torch.einsum("st,bthw->bshw", self.weight.to(label.dtype), label)


class Miner(nn.Module):
    """MineGAN miner (Wang et al. 2020): z -> z + MLP(z), starting at the identity."""

    def __init__(self, z_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, z_dim))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.net(z)


class TransferCondition(nn.Module):
    """[z' ; A·label (or label) ; label if keep_target]; z' = miner(z) when a miner is set."""

    def __init__(self, z_dim: int, affinity: AffinityLayer | None = None,
                 keep_target: bool = False, miner: Miner | None = None) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.affinity = affinity
        self.keep_target = keep_target
        self.miner = miner

    def forward(self, label: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.miner is not None:
            z = self.miner(z)
        parts = [expand_noise(z, label)]
        parts.append(self.affinity(label) if self.affinity is not None else label)
        if self.keep_target:
            parts.append(label)
        return torch.cat(parts, dim=1)


class CATSPADE(SPADE):
    """SPADE whose label input is [z ; A·one-hot_T ; one-hot_T] (paper §3.2).

    `conv_gamma`/`conv_beta` (split) or `conv_shared` read the first `main_channels`;
    `res_gamma`/`res_beta` (zero-init) read the trailing target one-hot channels.
    """

    def __init__(self, spade: SPADE, target_nc: int, split: bool, residual: bool) -> None:
        nn.Module.__init__(self)
        self.first_norm = spade.first_norm
        self.mlp_gamma = spade.mlp_gamma
        self.mlp_beta = spade.mlp_beta
        first = spade.mlp_shared[0]
        self.main_channels = first.in_channels
        self.split = split
        if split:
            self.conv_gamma = clone_module(first)
            self.conv_beta = clone_module(first)
        else:
            self.conv_shared = clone_module(first)
        self.residual = residual
        if residual:
            ks, pad = first.kernel_size, first.padding
            self.res_gamma = nn.Conv2d(target_nc, first.out_channels, ks, padding=pad)
            self.res_beta = nn.Conv2d(target_nc, first.out_channels, ks, padding=pad)
            for conv in (self.res_gamma, self.res_beta):
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    def label_features(self, seg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        main = seg[:, :self.main_channels]
        if self.split:
            h_gamma, h_beta = self.conv_gamma(main), self.conv_beta(main)
        else:
            h_gamma = h_beta = self.conv_shared(main)
        if self.residual:
            target = seg[:, self.main_channels:]
            h_gamma = h_gamma + self.res_gamma(target)
            h_beta = h_beta + self.res_beta(target)
        return F.relu(h_gamma), F.relu(h_beta)


def spade_modules(g: OasisGenerator) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in g.named_modules() if isinstance(m, SPADE)]


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, attr, module)


def cat_generator(source: OasisGenerator, target_classes: int, affinity: Any | None,
                  split: bool = True, residual: bool = True, seed: int = 0) -> OasisGenerator:
    """CAT generator from a source one (not modified). `affinity` None -> random A (seeded)."""
    cs = source.semantic_nc - 1
    values = (random_affinity(cs, target_classes, seed) if affinity is None
              else affinity_values(affinity))
    if values.shape != (cs, target_classes):
        raise ValueError(f"affinity: expected shape ({cs}, {target_classes}) = (source classes, "
                         f"target classes), got {values.shape}")
    g = clone_module(source)
    g.condition = TransferCondition(g.cfg.z_dim, AffinityLayer(values), keep_target=residual)
    if split or residual:
        for name, spade in spade_modules(g):
            _set_submodule(g, name, CATSPADE(spade, target_classes + 1, split, residual))
    g.semantic_nc = target_classes + 1
    return g


def _widen_input(conv: nn.Conv2d, z_dim: int, label_nc: int) -> nn.Conv2d:
    new = nn.Conv2d(z_dim + label_nc, conv.out_channels, conv.kernel_size,
                    padding=conv.padding, bias=conv.bias is not None)
    init_oasis_weights(new)
    with torch.no_grad():
        new.weight[:, :z_dim] = conv.weight[:, :z_dim]
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def reinit_label_inputs(source: OasisGenerator, target_classes: int,
                        miner: bool = False) -> OasisGenerator:
    """Generator reading target one-hots directly: label columns of `fc` and of every
    `mlp_shared.0` re-initialised ("class embedding" layers, paper §4.1 baselines)."""
    g = clone_module(source)
    z_dim, nc = g.cfg.z_dim, target_classes + 1
    g.fc = _widen_input(g.fc, z_dim, nc)
    for _, spade in spade_modules(g):
        spade.mlp_shared[0] = _widen_input(spade.mlp_shared[0], z_dim, nc)
    g.condition = TransferCondition(z_dim, miner=Miner(z_dim) if miner else None)
    g.semantic_nc = nc
    return g


D_HEAD_INITS = ("fresh", "keep_fake", "affinity")


def replace_d_head(source: OasisDiscriminator, target_classes: int, init: str = "fresh",
                   affinity: torch.Tensor | None = None) -> OasisDiscriminator:
    """Copy of D with a new (C_T+1)+1-way last layer (a 1×1 conv; output channel 0 is
    "fake", channel k+1 the label map's channel k, channel 1 the unlabeled one).

    init "fresh": every output channel randomly initialised (paper §3.2, the default).
    "keep_fake": the fake and unlabeled channels keep the source D's weights (its real/fake
    judgement carries over), the class channels are fresh.
    "affinity": as "keep_fake", and target class channel t starts as the A-weighted sum of
    the source class channels, sum_s A[s, t] · W_s (the source D's segmentation read through
    A; the paper tried a trainable A on top of D, which this equals at the start).
    `affinity`: the [C_S+1, C_T+1] weight of the generator's `AffinityLayer` (for "affinity").
    """
    if init not in D_HEAD_INITS:
        raise ValueError(f"d_head: expected one of {list(D_HEAD_INITS)}, got {init!r}")
    d = clone_module(source)
    old = d.layer_up_last
    d.layer_up_last = nn.Conv2d(old.in_channels, target_classes + 2, 1, 1, 0)
    init_oasis_weights(d.layer_up_last)
    if init == "fresh":
        return d
    new = d.layer_up_last
    with torch.no_grad():
        new.weight[:2] = old.weight[:2]
        new.bias[:2] = old.bias[:2]
        if init == "affinity":
            if affinity is None or tuple(affinity.shape) != (old.out_channels - 1,
                                                             target_classes + 1):
                raise ValueError(f"d_head 'affinity' needs the [{old.out_channels - 1}, "
                                 f"{target_classes + 1}] affinity weight, got "
                                 f"{None if affinity is None else tuple(affinity.shape)}")
            a = affinity.detach().to(old.weight.dtype)[1:, 1:]        # [C_S, C_T]
            new.weight[2:] = torch.einsum("st,sixy->tixy", a, old.weight[2:])
            new.bias[2:] = a.T @ old.bias[2:]
    return d


def frozen_d_prefixes(d: OasisDiscriminator, k: int) -> tuple[str, ...]:
    """FreezeD (Mo et al. 2020): the first k D layers, body_down blocks first (k = 0..9)."""
    names = d.layer_names()
    if not 0 <= k < len(names):
        raise ValueError(f"freeze_d: expected 0..{len(names) - 1}, got {k}")
    return tuple(names[:k])

"""OASIS generator (Schönfeld et al. 2021): SPADE residual blocks driven by [3D noise ; one-hot].

Parameter names and shapes match `boschresearch/OASIS` models/generator.py at the official
configurations (commit aeb875f; docs/oasis.md), so released `best_{G,EMA}.pth` files load by
name. The label
conditioning is a pluggable `condition` module (no parameters in plain OASIS) that turns
(one-hot, z) into the map every layer reads; CAT and the baselines swap it (transfer.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cat_models.oasis.config import OasisConfig
from cat_models.oasis.norms import SPADE, resize_like, sn


class NoiseConcat(nn.Module):
    """[z broadcast over the map ; one-hot]: z first, as the official generator concatenates
    them (so the first SPADE convs' input channels are z_dim + semantic_nc in that order)."""

    def __init__(self, z_dim: int) -> None:
        super().__init__()
        self.z_dim = z_dim

    def forward(self, label: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([expand_noise(z, label), label], dim=1)


def expand_noise(z: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return z[:, :, None, None].expand(-1, -1, like.shape[2], like.shape[3]).to(like.dtype)


class SPADEResBlock(nn.Module):
    def __init__(self, fin: int, fout: int, label_nc: int, cfg: OasisConfig) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        use_sn = cfg.spectral_norm
        self.conv_0 = sn(nn.Conv2d(fin, fmiddle, 3, padding=1), use_sn)
        self.conv_1 = sn(nn.Conv2d(fmiddle, fout, 3, padding=1), use_sn)
        if self.learned_shortcut:
            self.conv_s = sn(nn.Conv2d(fin, fout, 1, bias=False), use_sn)
        spade = {"hidden": cfg.spade_hidden, "ks": cfg.spade_ks, "norm": cfg.param_free_norm}
        self.norm_0 = SPADE(fin, label_nc, **spade)
        self.norm_1 = SPADE(fmiddle, label_nc, **spade)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc, **spade)
        self.activ = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        seg = resize_like(seg, x)
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(self.activ(self.norm_0(x, seg)))
        dx = self.conv_1(self.activ(self.norm_1(dx, seg)))
        return x_s + dx


class OasisGenerator(nn.Module):
    """label one-hot [B, C+1, H, W] (+ z [B, z_dim]) -> image [B, 3, H, W] in [-1, 1]."""

    def __init__(self, cfg: OasisConfig, semantic_nc: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.semantic_nc = semantic_nc
        widths = cfg.generator_widths()
        label_nc = semantic_nc + cfg.z_dim
        self.condition: nn.Module = NoiseConcat(cfg.z_dim)
        self.fc = nn.Conv2d(label_nc, widths[0], 3, padding=1)
        self.body = nn.ModuleList(
            SPADEResBlock(widths[i], widths[i + 1], label_nc, cfg)
            for i in range(cfg.num_res_blocks))
        self.conv_img = nn.Conv2d(widths[-1], 3, 3, padding=1)

    def forward(self, label: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if z is None:
            z = torch.randn(label.shape[0], self.cfg.z_dim, device=label.device)
        seg = self.condition(label, z)
        if self.fc.weight.is_contiguous(memory_format=torch.channels_last):
            # once here, instead of inside each SPADE's convolution (cat_models.oasis.train)
            seg = seg.contiguous(memory_format=torch.channels_last)
        # `fc` reads the leading channels: a condition may append extra ones (CAT's target map).
        x = F.interpolate(seg[:, :self.fc.in_channels], size=self.cfg.latent_size)
        x = self.fc(x)
        for i, block in enumerate(self.body):
            x = block(x, seg)
            if i < len(self.body) - 1:
                x = F.interpolate(x, scale_factor=2.0)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))


def init_oasis_weights(module: nn.Module, gain: float = 0.02) -> None:
    """OASIS init (models.py `init_networks`): xavier-normal(0.02) convs, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            weight = m.weight_orig if hasattr(m, "weight_orig") else m.weight
            nn.init.xavier_normal_(weight.data, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias.data)


def build_generator(cfg: OasisConfig, num_classes: int, init: bool = True) -> OasisGenerator:
    """A fresh generator for `num_classes` labelled classes (semantic_nc = num_classes + 1)."""
    g = OasisGenerator(cfg, num_classes + 1)
    if init:
        init_oasis_weights(g)
    return g

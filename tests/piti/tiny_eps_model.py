"""A small real conditional ε-model (and data) for the diffusion tests: a few convolutions on
x_t ⊕ mask (⊕ upsampled low_res), modulated by a sinusoidal timestep embedding, with 2C output
channels (ε, learned variance) — the calling convention of PITI's networks, at 8-16 px."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs.to(t.device)[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class TinyEpsModel(nn.Module):
    def __init__(self, mask_channels: int, width: int = 16, image_channels: int = 3,
                 super_res: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.width, self.super_res = width, super_res
        self.dropout = nn.Dropout(dropout)
        extra = image_channels if super_res else 0
        self.conv_in = nn.Conv2d(image_channels + mask_channels + extra, width, 3, padding=1)
        self.time = nn.Sequential(nn.Linear(32, width), nn.SiLU(), nn.Linear(width, 2 * width))
        self.norm = nn.GroupNorm(4, width)
        self.conv_mid = nn.Conv2d(width, width, 3, padding=1)
        self.conv_out = nn.Conv2d(width, 2 * image_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor,
                low_res: torch.Tensor | None = None) -> torch.Tensor:
        if mask.shape[-2:] != x.shape[-2:]:
            mask = F.interpolate(mask, size=x.shape[-2:], mode="area")
        parts = [x, mask]
        if self.super_res:
            parts.append(F.interpolate(low_res, size=x.shape[-2:], mode="bilinear",
                                       align_corners=False))
        h = self.conv_in(torch.cat(parts, dim=1))
        scale, shift = self.time(timestep_embedding(t, 32)).chunk(2, dim=1)
        h = self.norm(h) * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        h = F.silu(self.conv_mid(self.dropout(F.silu(h))))
        return self.conv_out(h)


class TensorData(list):
    """A list of {"image", "label"} items with the `num_classes` a dataset has."""

    def __init__(self, items: list[dict], num_classes: int) -> None:
        super().__init__(items)
        self.num_classes = num_classes


def blocky_data(n: int, num_classes: int, size: int = 8, seed: int = 0) -> TensorData:
    """Blocky label maps (0..num_classes) with class-coloured images in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    colours = torch.rand(num_classes + 1, 3, generator=gen) * 1.6 - 0.8
    items = []
    for i in range(n):
        coarse = torch.randint(0, num_classes + 1, (1, 1, 2, 2), generator=gen).float()
        label = F.interpolate(coarse, size=(size, size)).long()[0, 0]
        image = colours[label].permute(2, 0, 1) + 0.05 * torch.randn(3, size, size,
                                                                     generator=gen)
        items.append({"image": image.clamp(-1, 1), "label": label, "index": i})
    return TensorData(items, num_classes)


def one_hot_masks(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Labels [B, H, W] (0 = unlabeled, 1..N) -> the PITI networks' mask [B, N + 1, H, W]:
    class k on channel k - 1, unlabeled pixels all zero, the empty mask on channel N."""
    index = torch.where(labels == 0, num_classes + 1, labels - 1).long()
    out = torch.zeros(labels.shape[0], num_classes + 2, *labels.shape[1:])
    return out.scatter_(1, index.unsqueeze(1), 1.0)[:, :num_classes + 1]

"""Tiny PITI configs and models shared by the network tests (2 shared CPU cores)."""

from __future__ import annotations

import torch

from cat_models.piti import PitiConfig, PitiModel, preset

NUM_CLASSES = 5


def tiny_cfg(**overrides) -> PitiConfig:
    """16 px, 2 U-Net levels, 8-channel widths, a 2-level CNN (16 -> 8 px: 64 tokens)."""
    values = {"resolution": 16, "num_classes": NUM_CLASSES, "model_channels": 8,
              "channel_mult": (1, 2), "num_res_blocks": 1, "attention_resolutions": (8,),
              "num_head_channels": 8, "norm_groups": 4, "mask_resolution": 16,
              "cnn_channels": (8, 16), "xf_width": 16, "xf_layers": 2, "xf_heads": 2,
              "dropout": 0.0}
    values.update(overrides)
    return preset("embedded", **values)


def randomise(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Overwrite every parameter (the zero-initialised output layers included) with seeded
    noise, so that every path of the network reaches the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def tiny_model(seed: int = 0, rgb_input: bool = False, **overrides) -> PitiModel:
    torch.manual_seed(seed)
    return randomise(PitiModel(tiny_cfg(**overrides), rgb_input=rgb_input), seed).eval()


def random_labels(batch: int, side: int, num_classes: int = NUM_CLASSES, seed: int = 0,
                  unlabeled: bool = True) -> torch.Tensor:
    """Blocky label maps [B, side, side] with labels 0..N (0 = unlabeled) or 1..N."""
    gen = torch.Generator().manual_seed(seed)
    low = 0 if unlabeled else 1
    coarse = torch.randint(low, num_classes + 1, (batch, side // 4, side // 4), generator=gen)
    return coarse.repeat_interleave(4, 1).repeat_interleave(4, 2)

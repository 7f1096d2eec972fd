"""Tiny OASIS configs and in-memory data for the oasis tests (2 shared CPU cores)."""

from __future__ import annotations

import pytest
import torch

from cat_models.oasis import build_discriminator, build_generator, preset


def tiny_cfg(**overrides):
    values = {"resolution": (32, 32), "channels_g": 4, "channels_d": 4, "spade_hidden": 8, "z_dim": 4,
                  "num_res_blocks": 4, "batch_size": 4}
    values.update(overrides)
    return preset("bench64", **values)


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    out = torch.zeros(labels.shape[0], num_classes + 1, *labels.shape[1:])
    return out.scatter_(1, labels.unsqueeze(1), 1.0)


class TensorData(list):
    """A list of {"image", "label"} items with the dataset attributes the loop reads."""

    def __init__(self, items, num_classes):
        super().__init__(items)
        self.num_classes = num_classes
        self.class_names = [f"c{k}" for k in range(1, num_classes + 1)]


def random_data(n: int, num_classes: int, size=(32, 32), seed: int = 0) -> TensorData:
    """Blocky random label maps with class-coloured images (learnable, deterministic)."""
    gen = torch.Generator().manual_seed(seed)
    colours = torch.rand(num_classes + 1, 3, generator=gen) * 2 - 1
    items = []
    for i in range(n):
        coarse = torch.randint(0, num_classes + 1, (1, 1, size[0] // 8, size[1] // 8),
                               generator=gen).float()
        label = torch.nn.functional.interpolate(coarse, size=size).long()[0, 0]
        image = colours[label].permute(2, 0, 1) + 0.05 * torch.randn(3, *size, generator=gen)
        items.append({"image": image.clamp(-1, 1), "label": label, "index": i})
    return TensorData(items, num_classes)


@pytest.fixture
def source_models():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    return cfg, build_generator(cfg, 5), build_discriminator(cfg, 5)

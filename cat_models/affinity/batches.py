"""Seeded image/label batches from a segmentation dataset, shared by the image-based estimators."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from cat_models.affinity.matrix import AffinityError


def chosen_indices(n: int, max_images: int | None, seed: int) -> list[int]:
    """All positions, or a seeded random sample of `max_images` of them (sorted)."""
    if n == 0:
        raise AffinityError("dataset: no images to estimate affinities from")
    if max_images is None or max_images >= n:
        return list(range(n))
    if max_images < 1:
        raise AffinityError(f"max_images must be >= 1, got {max_images}")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n, size=max_images, replace=False))


def iterate_batches(dataset: Any, batch_size: int = 16, max_images: int | None = None,
                    seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images float [B,3,H,W] in [-1,1], labels long [B,H,W]) over the chosen items."""
    if batch_size < 1:
        raise AffinityError(f"batch_size must be >= 1, got {batch_size}")
    indices = chosen_indices(len(dataset), max_images, seed)
    for start in range(0, len(indices), batch_size):
        items = [dataset[i] for i in indices[start:start + batch_size]]
        yield (torch.stack([it["image"] for it in items]),
               torch.stack([it["label"] for it in items]).long())

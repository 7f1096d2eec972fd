"""Deterministic training batches, shared by every model family's training loop.

A step's batch is a function of (seed, step) alone: `step_generator` seeds the draw,
`batch_indices` picks the global batch, and `read_items` reads each item under its own seed in
a fork of torch's RNG (datasets augment, i.e. crop and flip, from the global RNG). So a batch
depends neither on what ran in the process before (Ray reuses worker processes) nor on how the
global batch is split over DDP ranks (`world`); `rng_states` / `restore_rng_states` carry
the global RNGs through a checkpoint.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed group; (0, 1) outside DDP."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def batch_indices(n: int, batch: int, gen: torch.Generator) -> torch.Tensor:
    """Global batch indices for one step: a random draw without replacement when possible."""
    if batch <= n:
        return torch.randperm(n, generator=gen)[:batch]
    return torch.randint(0, n, (batch,), generator=gen)


def read_items(data: Sequence[dict], indices: torch.Tensor, seeds: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [B, 3, H, W] float, labels [B, H, W] long) of items `indices`; item k is read
    under `seeds[k]` in a fork of torch's RNG, so the caller's RNG is untouched."""
    items = []
    for i, seed in zip(indices, seeds, strict=True):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            items.append(data[int(i)])
    images = torch.stack([torch.as_tensor(it["image"]) for it in items]).float()
    labels = torch.stack([torch.as_tensor(it["label"]) for it in items]).long()
    return images, labels


def rng_states() -> dict[str, Any]:
    """Every global RNG a training step draws from (torch, numpy, python, CUDA), for a
    checkpoint: restored by `restore_rng_states`, a resumed run continues the same streams."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"].cpu())
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])

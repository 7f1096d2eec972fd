"""Few-shot target subsets: the paper's greedy KL-to-uniform sampler (paper §4.1).

A random first image, then repeatedly the image that minimises KL(uniform || empirical pixel
class distribution of the chosen set). Given the seed the procedure is deterministic, and a run
to size n passes through every smaller size, so subsets of one seed are nested by construction.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

_EPS = 1e-8


def kl_to_uniform(counts: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
    """KL(uniform || p) for pixel-count rows `counts` [..., C], over the columns in `classes`.

    Columns outside `classes` (e.g. unlabeled, or classes absent from the whole pool, for which
    the divergence would be infinite whatever is chosen) are ignored.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if classes is not None:
        counts = counts[..., classes]
    p = counts / np.maximum(counts.sum(-1, keepdims=True), _EPS)
    c = counts.shape[-1]
    return -np.log(c) - np.log(p + _EPS).mean(-1)


def kl_greedy_subset(histograms: np.ndarray, size: int, seed: int) -> list[int]:
    """Indices of a subset of `size` images, chosen greedily to be close to class-uniform.

    `histograms` is [num_images, N + 1] pixel counts with column 0 = unlabeled (as returned by
    `cat_models.data.label_histograms`); unlabeled pixels are not a class and are ignored.
    """
    hist = np.asarray(histograms, dtype=np.float64)
    n_images = hist.shape[0]
    if not 1 <= size <= n_images:
        raise ValueError(f"subset size {size} must be between 1 and the pool size {n_images}")
    classes = np.where(hist[:, 1:].sum(0) > 0)[0] + 1
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(n_images))]
    available = np.ones(n_images, dtype=bool)
    available[chosen[0]] = False
    total = hist[chosen[0]].copy()
    for _ in range(size - 1):
        candidates = np.flatnonzero(available)
        scores = kl_to_uniform(total[None, :] + hist[candidates], classes)
        best = int(candidates[int(np.argmin(scores))])  # argmin: first of ties, deterministic
        chosen.append(best)
        available[best] = False
        total += hist[best]
    return chosen


def random_subset(num_images: int, size: int, seed: int) -> list[int]:
    """A uniformly random subset, for comparison with the greedy sampler."""
    if not 1 <= size <= num_images:
        raise ValueError(f"subset size {size} must be between 1 and the pool size {num_images}")
    return [int(i) for i in np.random.default_rng(seed).choice(num_images, size, replace=False)]


def save_subset(path: str | Path, indices: list[int], **meta) -> Path:
    """Write an index file: JSON with `indices` and whatever provenance is passed in `meta`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, "size": len(indices), "indices": indices}, indent=1))
    return path


def load_subset(path: str | Path) -> list[int]:
    data = json.loads(Path(path).read_text())
    return [int(i) for i in data["indices"]]

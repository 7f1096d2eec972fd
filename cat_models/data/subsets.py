"""Few-shot target subsets: the paper's greedy KL-to-uniform sampler (paper §4.1).

A random first image, then repeatedly the image that minimises KL(uniform || empirical pixel
class distribution of the chosen set). Given the seed the procedure is deterministic, and a run
to size n passes through every smaller size, so subsets of one seed are nested by construction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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


def rare_class_subset(histograms: np.ndarray, size: int, seed: int, rare: Sequence[int],
                      per_class: int) -> list[int]:
    """A few-shot set in which each class id in `rare` is shown by exactly `per_class` images.

    A long-tail probe: with 150+ classes and 25 images (the paper's COCO / ADE20K targets), most
    classes appear in one image or none; on a small label set the KL-greedy sampler shows every
    class many times. For each rare class, in the order given, `per_class` images that contain
    it and no other rare class are drawn at random (with `seed`); the rest of the set is
    `kl_greedy_subset` (same seed) over the images that contain none of the rare classes.
    `per_class=0` leaves the rare classes out of the set altogether. `histograms` as for
    `kl_greedy_subset`; a class is in an image when it labels one pixel or more.
    """
    hist = np.asarray(histograms, dtype=np.float64)
    n_images, n_cols = hist.shape
    rare = [int(c) for c in rare]
    bad = [c for c in rare if not 1 <= c < n_cols]
    if bad or len(set(rare)) != len(rare):
        raise ValueError(f"rare classes must be distinct class ids 1..{n_cols - 1}, got {rare}")
    if per_class < 0:
        raise ValueError(f"per_class must be >= 0, got {per_class}")
    n_rare = per_class * len(rare)
    if not n_rare < size <= n_images:
        raise ValueError(f"subset size {size} must exceed the {n_rare} rare-class images and "
                         f"be at most the pool size {n_images}")
    present = hist[:, rare] > 0   # [images, rare classes]
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for k, c in enumerate(rare):
        only = np.flatnonzero(present[:, k] & (present.sum(1) == 1))
        if len(only) < per_class:
            raise ValueError(f"rare class {c}: {len(only)} images show it without the other rare "
                             f"classes, {per_class} asked for")
        chosen += [int(i) for i in rng.choice(only, per_class, replace=False)]
    pool = np.flatnonzero(~present.any(1))
    if len(pool) < size - n_rare:
        raise ValueError(f"{len(pool)} images show none of the rare classes, "
                         f"{size - n_rare} needed")
    rest = kl_greedy_subset(hist[pool], size - n_rare, seed)
    return [int(pool[i]) for i in rest] + chosen


def random_subset(num_images: int, size: int, seed: int) -> list[int]:
    """A uniformly random subset, for comparison with the greedy sampler: the first `size` of a
    seeded permutation, so the subsets of one seed are nested as the greedy ones are."""
    if not 1 <= size <= num_images:
        raise ValueError(f"subset size {size} must be between 1 and the pool size {num_images}")
    return [int(i) for i in np.random.default_rng(seed).permutation(num_images)[:size]]


# ----------------------------------------------------------------------------- samplers
def _kl_greedy(hist: np.ndarray, size: int, seed: int, rare: Sequence[int],
               rare_images: int) -> list[int]:
    return kl_greedy_subset(hist, size, seed)


def _random(hist: np.ndarray, size: int, seed: int, rare: Sequence[int],
            rare_images: int) -> list[int]:
    return random_subset(len(hist), size, seed)


def _rare_classes(hist: np.ndarray, size: int, seed: int, rare: Sequence[int],
                  rare_images: int) -> list[int]:
    return rare_class_subset(hist, size, seed, rare, rare_images)


# The few-shot samplers a study may name (`target.subset.sampler`), each
# (histograms, size, seed, rare class ids, rare_images) -> indices. All three give nested sets
# for one seed: the greedy one passes through every smaller size, the random one takes a
# prefix of one permutation, the rare-class one keeps its rare images and greedy rest.
SAMPLERS = {
    "kl_greedy": _kl_greedy,          # paper §4.1 (the default)
    "random": _random,                # uniform, so the set keeps the pool's long tail
    "rare_classes": _rare_classes,    # the long-tail probe: chosen classes in k images each
}
# the samplers that take `rare` classes (the others ignore them)
TAKES_RARE = ("rare_classes",)


def sample_subset(sampler: str, histograms: np.ndarray, size: int, seed: int,
                  rare: Sequence[int] = (), rare_images: int = 0) -> list[int]:
    """Indices of a few-shot set of `size` drawn by `sampler` (a `SAMPLERS` name)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown few-shot sampler {sampler!r}; expected one of {list(SAMPLERS)}")
    return SAMPLERS[sampler](np.asarray(histograms), size, seed, rare, rare_images)


def save_subset(path: str | Path, indices: list[int], **meta) -> Path:
    """Write an index file: JSON with `indices` and whatever provenance is passed in `meta`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, "size": len(indices), "indices": indices}, indent=1))
    return path


def load_subset(path: str | Path) -> list[int]:
    data = json.loads(Path(path).read_text())
    return [int(i) for i in data["indices"]]

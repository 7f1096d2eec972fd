"""Feature-based class affinity from class prototypes (paper §3.1, Eq. 2).

A class prototype is the average of patch features, each patch weighted by the number of pixels
of that class inside it; A[l, k] ∝ cos(f_k^T, f_l^S). The patch pixel counts come from
average-pooling the one-hot label map onto the feature grid (exact when the image size is a
multiple of the grid, area-weighted otherwise). Unlabeled pixels (label 0) weigh nothing.

`center=True` (default, beyond the paper) subtracts the mean of all source and target
prototypes before the cosine. CNN features after a ReLU are all non-negative, so raw cosines
sit in a narrow positive band and clipping keeps every class; centring removes the shared
component and makes the column weights concentrate on the similar source classes
(benchmarks/RESULTS_affinity.md). `center=False` is the paper's plain cosine.
A class without any pixel in the images gets a uniform column / no prototype.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cat_models.affinity.batches import chosen_indices, iterate_batches
from cat_models.affinity.feature_backends import PatchFeatureExtractor, make_feature_extractor
from cat_models.affinity.matrix import AffinityMatrix
from cat_models.affinity.normalise import normalise_columns
from cat_models.affinity.registry import AffinityInputs, register_estimator


def patch_class_weights(labels: torch.Tensor, num_classes: int,
                        grid: tuple[int, int]) -> torch.Tensor:
    """Per-patch pixel fractions of each class [B, N, h, w] (label 0 dropped)."""
    one_hot = F.one_hot(labels.long(), num_classes + 1).permute(0, 3, 1, 2).float()
    return F.adaptive_avg_pool2d(one_hot, grid)[:, 1:]


def class_prototypes(extractor: PatchFeatureExtractor, dataset: Any, batch_size: int = 16,
                     max_images: int | None = None, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(prototypes [N, D], total patch weight per class [N]); absent classes have zero rows."""
    num_classes = dataset.num_classes
    sums: torch.Tensor | None = None
    weight = torch.zeros(num_classes, dtype=torch.float64)
    for images, labels in iterate_batches(dataset, batch_size, max_images, seed):
        feats = extractor(images).double()
        w = patch_class_weights(labels, num_classes, tuple(feats.shape[-2:])).double()
        batch_sum = torch.einsum("bkhw,bdhw->kd", w, feats)
        sums = batch_sum if sums is None else sums + batch_sum
        weight += w.sum(dim=(0, 2, 3))
    assert sums is not None  # iterate_batches raises on an empty dataset
    prototypes = sums / weight.clamp(min=1e-12)[:, None]
    return prototypes.numpy(), weight.numpy()


def prototype_cosine(source: np.ndarray, target: np.ndarray, source_present: np.ndarray,
                     target_present: np.ndarray, center: bool = True) -> np.ndarray:
    """Cosine [C_S, C_T] between prototypes; pairs with an absent class score 0."""
    if center:
        mean = np.concatenate([source[source_present], target[target_present]]).mean(0)
        source, target = source - mean, target - mean
    s = source / np.linalg.norm(source, axis=1, keepdims=True).clip(min=1e-12)
    t = target / np.linalg.norm(target, axis=1, keepdims=True).clip(min=1e-12)
    cosine = s @ t.T
    cosine[~source_present] = 0.0
    cosine[:, ~target_present] = 0.0
    return cosine


def feature_affinity(source_dataset: Any, target_dataset: Any,
                     extractor: PatchFeatureExtractor | None = None,
                     backend: str = "inception", backend_options: dict | None = None,
                     batch_size: int = 16, max_source_images: int | None = 200,
                     max_target_images: int | None = None, seed: int = 0, center: bool = True,
                     temperature: float | None = None, top_k: int | None = None
                     ) -> AffinityMatrix:
    """A (C_S × C_T) from cosines of class prototypes (paper §3.1, Eq. 2).

    `extractor` overrides `backend`/`backend_options` (see `feature_backends`). The source set
    is sampled (`max_source_images`, seeded) since the source dataset is large; the few-shot
    target set is used whole unless `max_target_images` is given.
    """
    if extractor is None:
        extractor = make_feature_extractor(backend, **(backend_options or {}))
    src, src_w = class_prototypes(extractor, source_dataset, batch_size, max_source_images, seed)
    tgt, tgt_w = class_prototypes(extractor, target_dataset, batch_size, max_target_images, seed)
    cosine = prototype_cosine(src, tgt, src_w > 0, tgt_w > 0, center)
    target_names = list(target_dataset.class_names)
    return AffinityMatrix(
        normalise_columns(cosine, temperature, top_k), source_dataset.class_names, target_names,
        "features", {
            "backend": extractor.name, "center": center, "seed": seed,
            "source_images": len(chosen_indices(len(source_dataset), max_source_images, seed)),
            "target_images": len(chosen_indices(len(target_dataset), max_target_images, seed)),
            "absent_source_classes": [source_dataset.class_names[i]
                                      for i in np.flatnonzero(src_w == 0)],
            "absent_target_classes": [target_names[i] for i in np.flatnonzero(tgt_w == 0)],
            "temperature": temperature, "top_k": top_k,
            "nonnegativity": "clip" if temperature is None else "softmax",
        })


@register_estimator("features")
def estimate_features(inputs: AffinityInputs, **options) -> AffinityMatrix:
    inputs.require("source_dataset", "target_dataset")
    options.setdefault("seed", inputs.seed)
    return feature_affinity(inputs.source_dataset, inputs.target_dataset, **options)

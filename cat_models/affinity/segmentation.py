"""Segmentation-based class affinity (paper §3.1, Eq. 1).

A source segmenter labels the target training images with source classes; A[l, k] counts the
pixels of target class k predicted as source class l, and each column is divided by its sum.
Unlabeled target pixels (label 0) are ignored. A target class absent from the images gets a
uniform column and is listed in the provenance (`absent_target_classes`).

`soft=True` (beyond the paper) accumulates the segmenter's softmax probabilities instead of
its argmax, which keeps second choices when the segmenter is unsure.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cat_models.affinity.batches import chosen_indices, iterate_batches
from cat_models.affinity.matrix import AffinityError, AffinityMatrix
from cat_models.affinity.normalise import normalise_columns
from cat_models.affinity.registry import AffinityInputs, SegmenterLike, register_estimator


def confusion_counts(segmenter: SegmenterLike, target_dataset: Any, batch_size: int = 16,
                     max_images: int | None = None, seed: int = 0,
                     soft: bool = False) -> np.ndarray:
    """Pixel counts [C_S, C_T]: target class k (column) predicted as source class l (row)."""
    num_source = len(segmenter.class_names)
    num_target = target_dataset.num_classes
    counts = torch.zeros(num_source + 1, num_target + 1, dtype=torch.float64)
    with torch.no_grad():
        for images, labels in iterate_batches(target_dataset, batch_size, max_images, seed):
            if soft:
                probs = _resized(segmenter.logits(images), labels.shape[-2:]).softmax(1)
                target = F.one_hot(labels, num_target + 1).permute(0, 3, 1, 2).to(probs.dtype)
                counts[1:] += torch.einsum("bshw,bthw->st", probs, target).double()
            else:
                predicted = segmenter.predict(images)
                if predicted.shape[-2:] != labels.shape[-2:]:
                    predicted = _resized(predicted[:, None].float(), labels.shape[-2:],
                                         "nearest")[:, 0].long()
                if predicted.min() < 1 or predicted.max() > num_source:
                    raise AffinityError(
                        f"segmenter.predict: values must be 1..{num_source} (its "
                        f"class_names), got {int(predicted.min())}..{int(predicted.max())}")
                pairs = predicted.flatten() * (num_target + 1) + labels.flatten()
                counts += torch.bincount(pairs, minlength=counts.numel()).view_as(counts)
    return counts[1:, 1:].numpy()


def _resized(x: torch.Tensor, size: torch.Size, mode: str = "bilinear") -> torch.Tensor:
    if x.shape[-2:] == size:
        return x
    if mode == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest")
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


def segmentation_affinity(segmenter: SegmenterLike, target_dataset: Any,
                          batch_size: int = 16, max_images: int | None = None, seed: int = 0,
                          soft: bool = False, temperature: float | None = None,
                          top_k: int | None = None) -> AffinityMatrix:
    """A (C_S × C_T) as the column-normalised confusion of Eq. 1 (paper §3.1).

    `temperature`/`top_k` are applied to the normalised proportions (see `normalise_columns`).
    """
    counts = confusion_counts(segmenter, target_dataset, batch_size, max_images, seed, soft)
    values = normalise_columns(counts)
    if temperature is not None or top_k is not None:
        values = normalise_columns(values, temperature, top_k)
    target_names = list(target_dataset.class_names)
    absent = [target_names[k] for k in np.flatnonzero(counts.sum(0) == 0)]
    return AffinityMatrix(values, segmenter.class_names, target_names, "segmentation", {
        "segmenter": getattr(segmenter, "identifier", type(segmenter).__name__), "soft": soft,
        "images": len(chosen_indices(len(target_dataset), max_images, seed)), "seed": seed,
        "pixels": float(counts.sum()), "absent_target_classes": absent,
        "temperature": temperature, "top_k": top_k,
    })


@register_estimator("segmentation")
def estimate_segmentation(inputs: AffinityInputs, **options) -> AffinityMatrix:
    inputs.require("segmenter", "target_dataset")
    options.setdefault("seed", inputs.seed)
    return segmentation_affinity(inputs.segmenter, inputs.target_dataset, **options)

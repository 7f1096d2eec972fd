"""The segmenter interface every mIoU / affinity consumer relies on.

Label convention (shared with `cat_models.data`): label 0 = unlabeled, classes 1..N, and
`class_names[k - 1]` names label k. A segmenter never predicts "unlabeled": `logits` has N
channels (class k at channel k - 1) and `predict` returns values 1..N.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from cat_models.errors import InputError


class SegmenterError(InputError):
    """A segmenter file, directory or input that cannot be used (the message says why)."""


@runtime_checkable
class Segmenter(Protocol):
    """What `cat_models.metrics` and `cat_models.affinity` need of a segmentation network."""

    class_names: list[str]

    @property
    def identifier(self) -> str:
        """A short provenance string recorded next to every mIoU (e.g. "small-unet:1a2b3c4d5e")."""
        ...

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """float [B, 3, H, W] in [-1, 1] -> float [B, N, H, W] at the input size, no grad."""
        ...

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """float [B, 3, H, W] in [-1, 1] -> long [B, H, W] with values 1..N."""
        ...


def check_images(images: torch.Tensor, who: str) -> None:
    """Shape check with an actionable message (images must be [B, 3, H, W] floats)."""
    if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise SegmenterError(
            f"{who}: images must be float [B, 3, H, W] in [-1, 1], got "
            f"{tuple(images.shape)} {images.dtype}")


def predict_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """argmax over the N class channels, shifted to labels 1..N."""
    return logits.argmax(1) + 1

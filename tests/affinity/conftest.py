"""Helpers for the affinity tests: tiny in-memory datasets, a stand-in segmenter, scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cat_models.affinity import AffinityMatrix


class TensorDataset:
    """The SegmentationDataset interface the estimators read, over tensors built in a test."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_names: list[str]):
        self.images, self.labels, self.class_names = images, labels.long(), list(class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i], "index": i}


class BrightnessSegmenter:
    """Source classes "dark" (1) / "bright" (2) from the sign of the channel mean."""

    def __init__(self) -> None:
        self.class_names = ["dark", "bright"]

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        m = images.mean(1, keepdim=True) * 10
        return torch.cat([-m, m], dim=1)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images).argmax(1) + 1


@pytest.fixture
def brightness_segmenter() -> BrightnessSegmenter:
    return BrightnessSegmenter()


def _top1_accuracy(affinity: AffinityMatrix, ground_truth: dict[str, str | None]) -> float:
    """Fraction of target classes with a counterpart whose top-1 source class is it."""
    hits = [affinity.source_names[int(np.argmax(affinity.values[:, j]))] == ground_truth[t]
            for j, t in enumerate(affinity.target_names) if ground_truth[t] is not None]
    return sum(hits) / len(hits)


@pytest.fixture
def top1_accuracy():
    return _top1_accuracy


@pytest.fixture
def tensor_dataset():
    return TensorDataset

"""Segmenter fixtures: a tiny in-memory dataset with a known answer."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch


class StripesDataset:
    """Images split into a left (class 1, reddish) and right (class 2, bluish) part at a random
    column; a 3-pixel band at the top is unlabeled (0) and painted green (never a class)."""

    class_names: ClassVar[list[str]] = ["red", "blue"]
    num_classes = 2
    name = "stripes"

    def __init__(self, n: int, size: int = 16, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            cut = int(torch.randint(3, size - 3, (1,), generator=g))
            label = torch.ones(size, size, dtype=torch.long)
            label[:, cut:] = 2
            label[:3] = 0
            image = torch.empty(3, size, size)
            image[:, :, :cut] = torch.tensor([0.8, -0.6, -0.6])[:, None, None]
            image[:, :, cut:] = torch.tensor([-0.6, -0.6, 0.8])[:, None, None]
            image[:, :3] = torch.tensor([-0.8, 0.9, -0.8])[:, None, None]
            image = (image + 0.15 * torch.randn(image.shape, generator=g)).clamp(-1, 1)
            self.items.append({"image": image, "label": label, "index": i})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


@pytest.fixture
def stripes() -> StripesDataset:
    return StripesDataset(24)


@pytest.fixture(scope="session")
def target_eval_segmenter(bench64, tmp_path_factory):
    """The evaluation segmenter of the embedded benchmark: default settings, trained on the
    FULL target training split (paper §4.1), saved and loaded back (cached for the session)."""
    from cat_models.data import open_dataset
    from cat_models.segmenters import load_segmenter, train_small_segmenter

    torch.set_num_threads(1)
    train = open_dataset("folder", bench64.target_root, "train", resolution=64)
    path = tmp_path_factory.mktemp("eval_segmenter") / "target_segmenter.pt"
    train_small_segmenter(train, seed=0, progress=False).save(path)
    return load_segmenter(path)

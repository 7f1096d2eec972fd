"""The label-map dataset every model, segmenter and metric reads.

Items are dicts: `image` float [3, H, W] in [-1, 1], `label` long [H, W] (0 = unlabeled,
1..N = classes), `index` (position in the underlying file list). Preprocessing follows OASIS:
resize to the working resolution (bicubic for images, nearest for labels), optional random crop
from a slightly larger load size, and horizontal flips when `augment` is on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

# The file readers need no torch (images.py: the input checks use them); re-exported here.
from cat_models.data.images import (
    Resolution,
    as_hw,
    read_image,
    read_label,
)
from cat_models.data.layouts import DatasetError, DatasetFiles, read_layout


class SegmentationDataset(Dataset):
    """Images + label maps of one split, at a fixed working resolution.

    `load_scale > 1` loads at that multiple of the resolution and random-crops back (training
    augmentation); `augment` also enables horizontal flips. Decoded, resized arrays are kept in
    memory (`cache_in_memory`), which makes small few-shot sets cost nothing to re-read.
    """

    def __init__(
        self,
        files: DatasetFiles,
        resolution: Resolution,
        augment: bool = False,
        load_scale: float = 1.0,
        indices: Sequence[int] | None = None,
        cache_in_memory: bool = True,
    ) -> None:
        self.files = files
        self.size_hw = as_hw(resolution)
        self.augment = augment
        self.load_scale = load_scale
        self.indices = list(range(len(files.images))) if indices is None else list(indices)
        bad = [i for i in self.indices if not 0 <= i < len(files.images)]
        if bad:
            raise DatasetError(
                f"{files.root}: subset index {bad[0]} outside 0..{len(files.images) - 1}"
            )
        self.cache_in_memory = cache_in_memory
        self._memory: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # -- metadata -------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return list(self.files.class_names)

    @property
    def num_classes(self) -> int:
        return self.files.num_classes

    @property
    def name(self) -> str:
        return self.files.name

    def __len__(self) -> int:
        return len(self.indices)

    def subset(self, indices: Sequence[int]) -> SegmentationDataset:
        """A view on positions `indices` of this dataset (sharing the in-memory cache)."""
        view = SegmentationDataset(
            self.files, self.size_hw, self.augment, self.load_scale,
            [self.indices[i] for i in indices], self.cache_in_memory,
        )
        view._memory = self._memory
        return view

    # -- reading --------------------------------------------------------------------------
    def _load_size(self) -> tuple[int, int]:
        h, w = self.size_hw
        return round(h * self.load_scale), round(w * self.load_scale)

    def load_arrays(self, file_index: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 image [h, w, 3] and int64 label [h, w] at the load size (no augmentation)."""
        if file_index in self._memory:
            return self._memory[file_index]
        size = self._load_size()
        image = read_image(self.files.images[file_index], size)
        label = read_label(self.files.labels[file_index], self.files, size)
        if self.cache_in_memory:
            self._memory[file_index] = (image, label)
        return image, label

    def __getitem__(self, i: int) -> dict:
        file_index = self.indices[i]
        image, label = self.load_arrays(file_index)
        if self.augment:
            image, label = self._augment(image, label)
        image_t = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)
        return {
            "image": image_t / 127.5 - 1.0,
            "label": torch.from_numpy(np.array(label, dtype=np.int64)),
            "index": file_index,
        }

    def _augment(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # torch's global RNG: seeded by the caller (DataLoader worker seeding / torch.manual_seed).
        h, w = self.size_hw
        lh, lw = label.shape
        if (lh, lw) != (h, w):
            top = int(torch.randint(0, lh - h + 1, ()).item())
            left = int(torch.randint(0, lw - w + 1, ()).item())
            image = image[top:top + h, left:left + w]
            label = label[top:top + h, left:left + w]
        if torch.rand(()) < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        return image, label

    def labels_at(self, i: int) -> np.ndarray:
        """The label map of item `i` at the working resolution, no augmentation."""
        return read_label(self.files.labels[self.indices[i]], self.files, self.size_hw)


def open_dataset(
    kind: str,
    root: str | Path,
    split: str = "train",
    resolution: Resolution = 64,
    augment: bool = False,
    load_scale: float = 1.0,
) -> SegmentationDataset:
    """Open one split of a dataset in a documented layout (see `cat_models.data.layouts`)."""
    files = read_layout(kind, root, split)
    return SegmentationDataset(files, resolution, augment=augment, load_scale=load_scale)


def one_hot(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[B, H, W] or [H, W] labels -> float one-hot [B, N + 1, H, W] (channel 0 = unlabeled)."""
    if label.dim() == 2:
        label = label.unsqueeze(0)
    out = torch.zeros(label.shape[0], num_classes + 1, *label.shape[1:], device=label.device)
    return out.scatter_(1, label.unsqueeze(1).long(), 1.0)


def label_histograms(dataset: SegmentationDataset, progress: bool = False) -> np.ndarray:
    """Pixel counts per class for every item: int64 [len(dataset), N + 1] (column 0 unlabeled)."""
    n = dataset.num_classes + 1
    hist = np.zeros((len(dataset), n), dtype=np.int64)
    for i in tqdm(range(len(dataset)), desc="label histograms", disable=not progress):
        file_index = dataset.indices[i]
        if file_index in dataset._memory and dataset.load_scale == 1.0:
            label = dataset._memory[file_index][1]
        else:
            label = dataset.labels_at(i)
        hist[i] = np.bincount(label.ravel(), minlength=n)[:n]
    return hist


def validate_dataset(dataset: SegmentationDataset, progress: bool = True) -> None:
    """Check every file's header and end (`check_files`), then read every image and label
    once at the working size; raise `DatasetError` naming the first bad file.

    Called by the harness's dataset stage so that bad input fails before any training.
    """
    from cat_models.data.validation import check_files  # it reads files through this module

    check_files(dataset.files, sample=0)
    for i in tqdm(range(len(dataset)), desc=f"checking {dataset.name}", disable=not progress):
        dataset.load_arrays(dataset.indices[i])

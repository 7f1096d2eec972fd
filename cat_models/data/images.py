"""Reading one image or label map of a dataset (PIL and numpy, no torch): the dataset
(dataset.py, which re-exports these) and the input checks (validation.py) read files alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cat_models.data.layouts import ID_MODES, DatasetError, DatasetFiles, label_ids, map_label_ids

Resolution = int | tuple[int, int]


def as_hw(resolution: Resolution) -> tuple[int, int]:
    """An int means square; a pair is (height, width)."""
    if isinstance(resolution, int):
        return resolution, resolution
    h, w = resolution
    return int(h), int(w)


def _open(path: Path, mode: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert(mode) if mode == "RGB" else im
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"{path}: unreadable file ({exc})") from exc


def read_label(path: Path, files: DatasetFiles, size_hw: tuple[int, int] | None) -> np.ndarray:
    """A label map mapped to our ids, optionally resized (nearest) to `size_hw`.

    Single-channel maps are resized before the id lookup (cheaper, same result for nearest);
    colour masks are mapped at full size, so a colour only a resize would drop is still found.
    """
    im = _open(path, "L")
    size = None if size_hw is None else (size_hw[1], size_hw[0])
    if im.mode in ID_MODES:
        if size is not None and im.size != size:
            im = im.resize(size, Image.NEAREST)
        return map_label_ids(label_ids(im, files, path), files, path)
    raw = label_ids(im, files, path)    # refuses modes the dataset cannot read, naming the file
    if size is not None and im.size != size:
        raw = np.asarray(Image.fromarray(raw.astype(np.int32)).resize(size, Image.NEAREST),
                         dtype=np.int64)
    return map_label_ids(raw, files, path)


def read_image(path: Path, size_hw: tuple[int, int] | None) -> np.ndarray:
    """uint8 [H, W, 3], resized (bicubic) to `size_hw` when given."""
    im = _open(path, "RGB")
    if size_hw is not None and im.size != (size_hw[1], size_hw[0]):
        im = im.resize((size_hw[1], size_hw[0]), Image.BICUBIC)
    return np.asarray(im, dtype=np.uint8)

"""Checking a dataset before training, cheaply enough for a 25k-image dataset.

`check_dataset(kind, root, split)` raises one `DatasetError` naming the first bad file (or
folder) and what is wrong, and otherwise returns what it looked at. How much is read:

* every file, without decoding pixels: the layout (folders, `classes.txt`, image <-> label
  pairing), each file's header (format, size, mode: an unreadable file, a label map whose
  mode is not one id per pixel, a JPEG label map, an image and label of different sizes), and
  its end (a PNG must end with its IEND chunk, a JPEG with its end-of-image marker, a BMP / WebP
  be as long as its header says) — a file that fails the end test is decoded to decide, so a
  truncated file whose pixels cannot all be decoded is always found;
* fully decoded: the pairs at `indices` (e.g. the few-shot subset that will be trained on) and
  `sample` more drawn with `seed` (default 64): the label ids are checked against the class
  list and colour masks against the palette.

Measured on 2 shared CPU cores (docs/failure_handling.md): the header + end pass costs
0.24 ms a pair at 256×256 and 0.34 ms at 512×672 (ADE20K's size) against 2.7 ms and 26 ms
for a full decode — 25k ADE-sized pairs take ~9 s instead of ~11 min — so it runs on every
file, and the default 64 decoded pairs add under 2 s. Ids out of range and unknown colours can
only be seen by decoding: a file outside the sample that holds one is reported when it is read
(the dataset stage's full read, the subset sampler's label histograms, training), with the same
message. `sample=None` decodes everything.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cat_models.data.images import read_image, read_label
from cat_models.data.layouts import DatasetError, DatasetFiles, label_mode_problem, read_layout

DEFAULT_SAMPLE = 64
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"   # the empty IEND chunk every PNG ends with
JPEG_END = b"\xff\xd9"


@dataclass(frozen=True)
class DatasetCheck:
    """What `check_dataset` looked at (all of it passed)."""

    name: str
    split: str
    pairs: int          # image / label pairs whose headers and ends were checked
    decoded: int        # pairs fully decoded (ids / colours checked)
    num_classes: int
    seconds: float


def check_dataset(kind: str, root: str | Path, split: str = "train", *,
                  num_classes: int | None = None, indices: Sequence[int] = (),
                  sample: int | None = DEFAULT_SAMPLE, seed: int = 0) -> DatasetCheck:
    """Check one split of a dataset in a documented layout; see the module docstring.

    `num_classes`, when given, is the class count the caller expects (e.g. of a study).
    """
    files = read_layout(kind, root, split)
    if num_classes is not None and files.num_classes != num_classes:
        raise DatasetError(f"{files.root}: {files.name} has {files.num_classes} classes, "
                           f"expected {num_classes}")
    return check_files(files, indices=indices, sample=sample, seed=seed)


def check_files(files: DatasetFiles, *, indices: Sequence[int] = (),
                sample: int | None = DEFAULT_SAMPLE, seed: int = 0) -> DatasetCheck:
    """The checks of `check_dataset` on an already read layout."""
    start = time.perf_counter()
    n = len(files.images)
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise DatasetError(f"{files.root}: index {bad[0]} outside the {n} pairs of the "
                           f"{files.split} split")
    for image, label in zip(files.images, files.labels, strict=True):
        image_fmt, image_size, _ = _header(image)
        label_fmt, label_size, label_mode = _header(label)
        problem = label_mode_problem(label_mode, files)
        if problem:
            raise DatasetError(f"{label}: {problem}")
        if label_fmt == "JPEG":
            raise DatasetError(f"{label}: label map is a JPEG file; lossy compression changes "
                               "ids at region borders (save label maps as PNG)")
        if image_size != label_size:
            raise DatasetError(f"{label}: label map is {label_size[0]}×{label_size[1]} but its "
                               f"image {image.name} is {image_size[0]}×{image_size[1]}")
        for path, fmt in ((image, image_fmt), (label, label_fmt)):
            if not _looks_complete(path, fmt):
                _decode(path)
    chosen = decode_positions(n, indices, sample, seed)
    for i in chosen:
        read_image(files.images[i], None)
        read_label(files.labels[i], files, None)
    return DatasetCheck(files.name, files.split, n, len(chosen), files.num_classes,
                        time.perf_counter() - start)


def decode_positions(n: int, indices: Sequence[int], sample: int | None, seed: int) -> list[int]:
    """`indices` plus `sample` other positions of 0..n-1 drawn with `seed` (all if None)."""
    if sample is None:
        return list(range(n))
    must = sorted(set(indices))
    rest = np.setdiff1d(np.arange(n), must)
    drawn = np.random.default_rng(seed).choice(rest, size=min(sample, len(rest)), replace=False)
    return sorted(set(must) | {int(i) for i in drawn})


def _header(path: Path) -> tuple[str, tuple[int, int], str]:
    """(format, (width, height), mode) from the file's header; pixels are not decoded."""
    try:
        with Image.open(path) as im:
            return str(im.format), im.size, im.mode
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        # PIL says "Truncated File Read" when the file ends inside its header
        what = "truncated or damaged" if "truncated" in str(exc).lower() else "unreadable"
        raise DatasetError(f"{path}: {what} file ({exc})") from None


def _looks_complete(path: Path, fmt: str) -> bool:
    """Does the file end the way its format ends? False means "decode it to know"."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if fmt == "PNG":
            f.seek(max(0, size - len(PNG_END)))
            return f.read() == PNG_END
        if fmt == "JPEG":
            f.seek(max(0, size - len(JPEG_END)))
            return f.read() == JPEG_END
        if fmt in ("BMP", "WEBP"):
            # BMP: file size at byte 2; WebP: RIFF payload size at byte 4 (+ 8 header bytes)
            f.seek(2 if fmt == "BMP" else 4)
            declared = int.from_bytes(f.read(4), "little") + (0 if fmt == "BMP" else 8)
            return size >= declared
    return False


def _decode(path: Path) -> None:
    try:
        with Image.open(path) as im:
            im.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: truncated or damaged file ({exc})") from None

"""On-disk layouts of the supported datasets -> sorted (image, label) file pairs + class names.

Each reader returns a `DatasetFiles`; every layout maps its raw label ids to the package-wide
convention (0 = unlabeled, 1..N = classes, `class_names[k - 1]` names label k) through a lookup
table applied when a label map is read.

Label maps hold one id per pixel: single-channel PNGs (modes L, P, I;16, I) are read as ids.
A custom dataset may instead store colour-coded RGB masks when its `classes.txt` declares the
colours (`name R G B` on line k = the colour of label k); black is unlabeled unless a class
claims it, and any other colour is refused naming the file and the colour. Any other RGB (or
grey + alpha, bilevel, float ...) label map is refused: converting it to grey, as PIL would,
silently merges ids.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from cat_models.errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# PIL modes whose pixel values are the ids themselves (P: palette indices, as Pascal VOC)
ID_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N")
COLOUR_MODES = ("RGB", "RGBA")   # colour-coded masks; alpha is ignored
Colour = tuple[int, int, int]


@dataclass(frozen=True)
class DatasetFiles:
    """The files of one split of a dataset and how to read its label ids."""

    name: str
    root: Path
    split: str
    images: tuple[Path, ...]
    labels: tuple[Path, ...]
    class_names: tuple[str, ...]
    # raw id -> our label (0 = unlabeled); ids beyond the table are invalid.
    label_lut: tuple[int, ...]
    # colour of label k at position k - 1, for colour-coded RGB masks (classes.txt `name R G B`)
    palette: tuple[Colour, ...] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def packaged_class_names(dataset: str) -> list[str]:
    """Class names shipped with the package: `ade20k`, `coco_stuff` or `cityscapes`."""
    path = resources.files("cat_models.data").joinpath("class_names", f"{dataset}.txt")
    if not path.is_file():
        raise DatasetError(f"no packaged class-name list for dataset {dataset!r}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_classes_txt(path: Path) -> list[str]:
    """`classes.txt` of a custom dataset: line k names label k (k = 1..N); colours stripped."""
    return read_class_list(path)[0]


def read_class_list(path: Path) -> tuple[list[str], tuple[Colour, ...] | None]:
    """(names, palette) of a `classes.txt`: line k is `name` or `name R G B` (label k's colour).

    Either every line has a colour or none does; colours are 0..255 and distinct.
    """
    if not path.is_file():
        raise DatasetError(f"{path}: missing classes.txt (line k must name label k, k = 1..N)")
    lines = [line.strip() for line in path.read_text().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    empty = [i + 1 for i, n in enumerate(lines) if not n]
    if not lines or empty:
        raise DatasetError(f"{path}: empty class name on line(s) {empty or [1]}")
    parsed = [_split_colour(line, path, k) for k, line in enumerate(lines, start=1)]
    coloured = [i + 1 for i, (_, colour) in enumerate(parsed) if colour is not None]
    if not coloured:
        return lines, None
    if len(coloured) != len(lines):
        plain = next(i + 1 for i, (_, c) in enumerate(parsed) if c is None)
        raise DatasetError(f"{path}: line {plain} has no colour but line {coloured[0]} has one; "
                           "give every class a colour (`name R G B`) or none")
    palette = tuple(c for _, c in parsed if c is not None)
    seen: dict[Colour, int] = {}
    for k, colour in enumerate(palette, start=1):
        if colour in seen:
            raise DatasetError(f"{path}: lines {seen[colour]} and {k} both use colour {colour}")
        seen[colour] = k
    return [name for name, _ in parsed], palette


def _split_colour(line: str, path: Path, lineno: int) -> tuple[str, Colour | None]:
    """`"cloudy sky 10 20 30"` -> ("cloudy sky", (10, 20, 30)); a plain name has no colour."""
    tokens = line.split()
    if len(tokens) < 4 or not all(t.isdigit() for t in tokens[-3:]):
        return line, None
    r, g, b = (int(t) for t in tokens[-3:])
    if max(r, g, b) > 255:
        raise DatasetError(f"{path}: line {lineno} ({line!r}): colour values must be 0..255")
    return " ".join(tokens[:-3]), (r, g, b)


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{path}: missing {what} folder")
    return path


def _pair_by_stem(
    image_dir: Path, label_dir: Path, label_stem: Callable[[str], str] = lambda s: s
) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """Match images to label maps by file stem, recursively; any unmatched file is an error."""
    images = {
        label_stem(p.stem): p
        for p in sorted(image_dir.rglob("*"))
        if p.suffix.lower() in IMAGE_SUFFIXES
    }
    labels = {p.stem: p for p in sorted(label_dir.rglob("*.png"))}
    missing_label = sorted(set(images) - set(labels))
    if missing_label:
        raise DatasetError(
            f"{images[missing_label[0]]}: image has no label map in {label_dir} "
            f"({len(missing_label)} image(s) without label)"
        )
    missing_image = sorted(set(labels) - set(images))
    if missing_image:
        raise DatasetError(
            f"{labels[missing_image[0]]}: label map has no image in {image_dir} "
            f"({len(missing_image)} label map(s) without image)"
        )
    if not images:
        raise DatasetError(f"{image_dir}: no images found")
    keys = sorted(images)
    return tuple(images[k] for k in keys), tuple(labels[k] for k in keys)


def _identity_lut(num_classes: int) -> tuple[int, ...]:
    return tuple(range(num_classes + 1))


ADE_SPLITS = {"train": "training", "val": "validation"}


def read_ade_layout(
    root: Path, split: str, class_names: list[str], name: str,
    palette: tuple[Colour, ...] | None = None,
) -> DatasetFiles:
    """`images/{training,validation}`, `annotations/{training,validation}`, 0 = unlabeled."""
    if (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    sub = ADE_SPLITS[split]
    images, labels = _pair_by_stem(
        _require_dir(root / "images" / sub, "images"),
        _require_dir(root / "annotations" / sub, "annotations"),
    )
    return DatasetFiles(name, root, split, images, labels, tuple(class_names),
                        _identity_lut(len(class_names)), palette)


def read_ade20k(root: Path, split: str) -> DatasetFiles:
    return read_ade_layout(root, split, packaged_class_names("ade20k"), "ade20k")


def read_folder(root: Path, split: str) -> DatasetFiles:
    """A custom dataset: ADE20K layout plus `classes.txt` at the root (optionally a palette)."""
    names, palette = read_class_list(root / "classes.txt")
    return read_ade_layout(root, split, names, root.name, palette)


def read_coco_stuff(root: Path, split: str) -> DatasetFiles:
    """SPADE layout: `{train,val}_img`, `{train,val}_label`; ids 0..181 -> 1..182, 255 unlabeled."""
    images, labels = _pair_by_stem(
        _require_dir(root / f"{split}_img", f"{split}_img"),
        _require_dir(root / f"{split}_label", f"{split}_label"),
    )
    names = packaged_class_names("coco_stuff")
    lut = [-1] * 256  # -1 marks ids that are neither a class nor unlabeled
    for raw in range(len(names)):
        lut[raw] = raw + 1
    lut[255] = 0
    return DatasetFiles("coco_stuff", root, split, images, labels, tuple(names), tuple(lut))


def read_cityscapes(root: Path, split: str) -> DatasetFiles:
    """`leftImg8bit/<split>/<city>/*_leftImg8bit.png`, `gtFine/<split>/<city>/*_labelIds.png`.

    labelIds are used as they are (0 = unlabeled, 1..33 named), as OASIS does.
    """
    image_dir = _require_dir(root / "leftImg8bit" / split, "leftImg8bit/" + split)
    label_dir = _require_dir(root / "gtFine" / split, "gtFine/" + split)
    label_files = {
        p.name.replace("_gtFine_labelIds.png", ""): p
        for p in sorted(label_dir.rglob("*_gtFine_labelIds.png"))
    }
    image_files = {
        p.name.replace("_leftImg8bit.png", ""): p
        for p in sorted(image_dir.rglob("*_leftImg8bit.png"))
    }
    for stem in sorted(set(image_files) - set(label_files)):
        raise DatasetError(f"{image_files[stem]}: image has no *_gtFine_labelIds.png")
    for stem in sorted(set(label_files) - set(image_files)):
        raise DatasetError(f"{label_files[stem]}: label map has no *_leftImg8bit.png image")
    if not image_files:
        raise DatasetError(f"{image_dir}: no *_leftImg8bit.png images found")
    keys = sorted(image_files)
    names = packaged_class_names("cityscapes")
    return DatasetFiles(
        "cityscapes", root, split,
        tuple(image_files[k] for k in keys), tuple(label_files[k] for k in keys),
        tuple(names), _identity_lut(len(names)),
    )


LAYOUTS: dict[str, Callable[[Path, str], DatasetFiles]] = {
    "ade20k": read_ade20k,
    "coco_stuff": read_coco_stuff,
    "cityscapes": read_cityscapes,
    "folder": read_folder,
}


def read_layout(kind: str, root: str | Path, split: str) -> DatasetFiles:
    """Dispatch on the layout name; errors name the bad field/folder."""
    if kind not in LAYOUTS:
        raise DatasetError(f"unknown dataset kind {kind!r}; expected one of {sorted(LAYOUTS)}")
    if split not in ADE_SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected 'train' or 'val'")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root folder does not exist")
    return LAYOUTS[kind](root, split)


def map_label_ids(raw: np.ndarray, files: DatasetFiles, path: Path) -> np.ndarray:
    """Raw ids -> our labels; an id outside the class list raises naming the file."""
    lut = np.asarray(files.label_lut, dtype=np.int64)
    if raw.min(initial=0) < 0 or raw.max(initial=0) >= len(lut) or (lut[raw] < 0).any():
        if raw.min(initial=0) < 0:
            bad = int(raw.min())
        elif raw.max() >= len(lut):
            bad = int(raw.max())
        else:
            bad = int(raw[lut[raw] < 0].max())
        raise DatasetError(
            f"{path}: label id {bad} is outside the {files.num_classes} classes of "
            f"{files.name} (valid ids: 0 = unlabeled, 1..{files.num_classes})"
        )
    return lut[raw]


def label_mode_problem(mode: str, files: DatasetFiles) -> str:
    """Why a label map of PIL `mode` cannot be read for this dataset ("" when it can)."""
    if mode in ID_MODES or (mode in COLOUR_MODES and files.palette is not None):
        return ""
    if mode in COLOUR_MODES:
        return (f"{mode} label map; label maps hold one class id per pixel (8- or 16-bit "
                "single-channel PNG), or, for colour-coded masks, classes.txt gives each class "
                "its colour (`name R G B` on line k)")
    return (f"label map of PIL mode {mode!r}; expected one class id per pixel (8- or 16-bit "
            "single-channel PNG)")


def label_ids(im: Image.Image, files: DatasetFiles, path: Path) -> np.ndarray:
    """The raw ids of a decoded label map (colour masks through the dataset's palette)."""
    problem = label_mode_problem(im.mode, files)
    if problem:
        raise DatasetError(f"{path}: {problem}")
    if im.mode in ID_MODES:
        return np.asarray(im, dtype=np.int64)
    return colours_to_ids(np.asarray(im.convert("RGB")), files.palette or (), path)


def colours_to_ids(rgb: np.ndarray, palette: tuple[Colour, ...], path: Path) -> np.ndarray:
    """uint8 [H, W, 3] -> int64 ids: palette[k - 1] is label k; black is 0 unless listed."""
    keys = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) \
        | rgb[..., 2].astype(np.int64)
    table = {0: 0} | {(r << 16) | (g << 8) | b: k for k, (r, g, b) in enumerate(palette, 1)}
    colours, inverse = np.unique(keys, return_inverse=True)
    ids = np.array([table.get(int(c), -1) for c in colours], dtype=np.int64)
    unknown = colours[ids < 0]
    if len(unknown):
        c = int(unknown[0])
        pixels = int((keys == c).sum())
        raise DatasetError(
            f"{path}: colour ({c >> 16}, {(c >> 8) & 255}, {c & 255}) is not in the palette of "
            f"classes.txt ({pixels} pixel(s); {len(unknown)} unknown colour(s) in this file)")
    return ids[inverse].reshape(keys.shape)
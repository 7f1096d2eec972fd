"""On-disk layouts of the supported datasets -> sorted (image, label) file pairs + class names.

Each reader returns a `DatasetFiles`; every layout maps its raw label ids to the package-wide
convention (0 = unlabeled, 1..N = classes, `class_names[k - 1]` names label k) through a lookup
table applied when a label map is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from cat_models.errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


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
    """`classes.txt` of a custom dataset: line k names label k (k = 1..N)."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing classes.txt (line k must name label k, k = 1..N)")
    names = [line.strip() for line in path.read_text().splitlines()]
    while names and not names[-1]:
        names.pop()
    empty = [i + 1 for i, n in enumerate(names) if not n]
    if not names or empty:
        raise DatasetError(f"{path}: empty class name on line(s) {empty or [1]}")
    return names


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
    root: Path, split: str, class_names: list[str], name: str
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
                        _identity_lut(len(class_names)))


def read_ade20k(root: Path, split: str) -> DatasetFiles:
    return read_ade_layout(root, split, packaged_class_names("ade20k"), "ade20k")


def read_folder(root: Path, split: str) -> DatasetFiles:
    """A custom dataset: ADE20K layout plus `classes.txt` at the root."""
    return read_ade_layout(root, split, read_classes_txt(root / "classes.txt"), root.name)


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
    if raw.max(initial=0) >= len(lut) or (lut[raw] < 0).any():
        bad = int(raw.max()) if raw.max() >= len(lut) else int(raw[lut[raw] < 0].max())
        raise DatasetError(
            f"{path}: label id {bad} is outside the {files.num_classes} classes of "
            f"{files.name} (valid ids: 0 = unlabeled, 1..{files.num_classes})"
        )
    return lut[raw]

"""Readers for ADE20K, COCO-Stuff, Cityscapes and custom folders, on tiny fake datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cat_models.data import DatasetError, open_dataset, packaged_class_names, validate_dataset


def _write_pair(img: Path, lab: Path, label: np.ndarray, colour=(200, 10, 10)) -> None:
    img.parent.mkdir(parents=True, exist_ok=True)
    lab.parent.mkdir(parents=True, exist_ok=True)
    h, w = label.shape
    Image.fromarray(np.full((h, w, 3), colour, np.uint8)).save(img)
    Image.fromarray(label.astype(np.uint8)).save(lab)


def _ade(root: Path, labels: list[np.ndarray], split="training", classes=None) -> Path:
    for i, lab in enumerate(labels):
        _write_pair(root / "images" / split / f"im{i}.jpg",
                    root / "annotations" / split / f"im{i}.png", lab)
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def test_ade20k_layout_reads_labels_and_images(tmp_path):
    lab = np.zeros((20, 30), np.uint8)
    lab[:, 10:] = 150
    lab[:5] = 3
    _ade(tmp_path / "ADEChallengeData2016", [lab, lab])
    ds = open_dataset("ade20k", tmp_path, "train", resolution=(10, 15))
    assert len(ds) == 2 and ds.num_classes == 150
    assert ds.class_names[2] == packaged_class_names("ade20k")[2]
    item = ds[0]
    assert item["image"].shape == (3, 10, 15)
    assert item["label"].shape == (10, 15)
    assert set(item["label"].unique().tolist()) == {0, 3, 150}
    # colour (200, 10, 10) maps into [-1, 1] (JPEG may move it slightly)
    red = item["image"][0].mean().item()
    assert 0.5 < red <= 1.0 and item["image"].min() >= -1.0


def test_coco_stuff_maps_ids_and_unlabeled(tmp_path):
    lab = np.full((8, 8), 255, np.uint8)
    lab[:4] = 0
    lab[4:, :4] = 181
    _write_pair(tmp_path / "val_img" / "a.jpg", tmp_path / "val_label" / "a.png", lab)
    ds = open_dataset("coco_stuff", tmp_path, "val", resolution=8)
    assert ds.num_classes == 182
    label = ds[0]["label"]
    assert label[0, 0] == 1 and label[7, 0] == 182 and label[7, 7] == 0


def test_cityscapes_layout(tmp_path):
    lab = np.full((16, 32), 7, np.uint8)  # 7 = road in labelIds
    lab[:4] = 23  # sky
    for city, n in [("aachen", 2), ("bochum", 1)]:
        for i in range(n):
            stem = f"{city}_000000_00000{i}"
            _write_pair(tmp_path / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png",
                        tmp_path / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png", lab)
    ds = open_dataset("cityscapes", tmp_path, "train", resolution=(8, 16))
    assert len(ds) == 3
    assert ds.class_names[7 - 1] == "road" and ds.class_names[23 - 1] == "sky"
    assert set(ds[2]["label"].unique().tolist()) == {7, 23}


def test_custom_folder_uses_classes_txt(tmp_path):
    lab = np.array([[1, 2], [2, 0]], np.uint8)
    _ade(tmp_path, [lab], classes=["cat", "dog"])
    ds = open_dataset("folder", tmp_path, "train", resolution=2)
    assert ds.class_names == ["cat", "dog"] and ds.num_classes == 2
    assert ds[0]["label"].tolist() == [[1, 2], [2, 0]]


@pytest.mark.parametrize(
    "breakage, expected",
    [
        ("no_root", "dataset root folder does not exist"),
        ("no_annotations", "missing annotations folder"),
        ("image_without_label", "image has no label map"),
        ("label_without_image", "label map has no image"),
        ("label_out_of_range", "label id 9 is outside the 2 classes"),
        ("unreadable", "unreadable file"),
        ("no_classes_txt", "missing classes.txt"),
    ],
)
def test_bad_input_names_the_file(tmp_path, breakage, expected):
    root = _ade(tmp_path / "d", [np.ones((4, 4), np.uint8)] * 2, classes=["a", "b"])
    culprit = root
    if breakage == "no_root":
        culprit = tmp_path / "nowhere"
        root = culprit
    elif breakage == "no_annotations":
        culprit = root / "annotations" / "training"
        for p in culprit.iterdir():
            p.unlink()
        culprit.rmdir()
    elif breakage == "image_without_label":
        culprit = root / "images" / "training" / "im1.jpg"
        (root / "annotations" / "training" / "im1.png").unlink()
    elif breakage == "label_without_image":
        culprit = root / "annotations" / "training" / "im1.png"
        (root / "images" / "training" / "im1.jpg").unlink()
    elif breakage == "label_out_of_range":
        culprit = root / "annotations" / "training" / "im1.png"
        Image.fromarray(np.full((4, 4), 9, np.uint8)).save(culprit)
    elif breakage == "unreadable":
        culprit = root / "images" / "training" / "im0.jpg"
        culprit.write_bytes(b"not an image")
    elif breakage == "no_classes_txt":
        culprit = root / "classes.txt"
        culprit.unlink()
    with pytest.raises(DatasetError) as err:
        validate_dataset(open_dataset("folder", root, "train", resolution=4), progress=False)
    assert expected in str(err.value)
    assert str(culprit) in str(err.value)


def test_augment_flips_image_and_label_together(tmp_path):
    lab = np.zeros((4, 8), np.uint8)
    lab[:, :2] = 1
    _ade(tmp_path, [lab], classes=["left"])
    ds = open_dataset("folder", tmp_path, "train", resolution=(4, 8), augment=True)
    seen = set()
    torch.manual_seed(0)
    for _ in range(20):
        label = ds[0]["label"]
        seen.add(int(label[0, 0]))
        assert int(label[0].sum()) == 2  # the class keeps its size whichever way it faces
    assert seen == {0, 1}


def test_subset_view_and_one_hot(tmp_path):
    labs = [np.full((2, 2), k, np.uint8) for k in (0, 1, 2)]
    _ade(tmp_path, labs, classes=["a", "b"])
    ds = open_dataset("folder", tmp_path, "train", resolution=2)
    sub = ds.subset([2, 0])
    assert len(sub) == 2 and int(sub[0]["label"][0, 0]) == 2 and sub[1]["index"] == 0
    from cat_models.data import one_hot

    oh = one_hot(torch.stack([ds[i]["label"] for i in range(3)]), ds.num_classes)
    assert oh.shape == (3, 3, 2, 2)
    assert oh.sum(1).eq(1).all() and oh[1, 1].eq(1).all() and oh[2, 2].eq(1).all()

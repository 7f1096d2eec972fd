"""The aerial target domain: its own names, grammar and stream; the outdoor benchmark untouched."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cat_models.data import label_histograms, open_dataset
from cat_models.data.synthetic import (
    GROUND_TRUTH,
    SOURCE_CLASSES,
    TARGET_CLASSES,
    generate_benchmark,
)
from cat_models.data.synthetic_aerial import (
    AERIAL_CLASSES,
    AERIAL_GROUND_TRUTH,
    aerial_folder,
    ensure_aerial,
    generate_aerial,
)
from cat_models.data.synthetic_domains import CLASS_NAMES, GROUND_TRUTHS, TARGET_KINDS
from harness.config import SYNTHETIC_TARGET_KINDS, DatasetSpec, parse_study
from harness.stages_data import resolve_dataset

REPO = Path(__file__).resolve().parents[2]
# Pixels of generate_benchmark(resolution=32, seed=3, n_source=20, n_target=20), drawn by the
# code before the aerial domain existed: the outdoor benchmark must stay exactly this.
OUTDOOR_PIXELS_SHA256 = "3441ad6dcbd78dc9d354de0de1bdc66d60bebbf834a85f2f9b0a60b6e4b41a99"


def _pixels(root: Path) -> str:
    """sha256 over every PNG's relative path and decoded pixels (independent of the encoder)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(str(p.relative_to(root)).encode())
        h.update(np.ascontiguousarray(np.asarray(Image.open(p))).tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def aerial(tmp_path_factory) -> Path:
    """The aerial domain at 32 px: 40 training and 20 validation images."""
    return ensure_aerial(tmp_path_factory.mktemp("aerial"), resolution=32, seed=0, n_target=40)


def test_names_are_disjoint_from_both_outdoor_domains_with_a_ground_truth():
    assert 9 <= len(AERIAL_CLASSES) == len(set(AERIAL_CLASSES)) <= 10
    assert not set(AERIAL_CLASSES) & (set(SOURCE_CLASSES) | set(TARGET_CLASSES))
    assert set(AERIAL_GROUND_TRUTH) == set(AERIAL_CLASSES)
    assert {v for v in AERIAL_GROUND_TRUTH.values() if v} <= set(SOURCE_CLASSES)
    assert 1 <= sum(v is None for v in AERIAL_GROUND_TRUTH.values()) <= 2
    # reachable per dataset kind; the outdoor target's ground truth is the one it always was
    assert GROUND_TRUTHS["synthetic_aerial"] is AERIAL_GROUND_TRUTH
    assert GROUND_TRUTHS["synthetic_target"] is GROUND_TRUTH
    assert set(TARGET_KINDS) == set(SYNTHETIC_TARGET_KINDS) == set(GROUND_TRUTHS)
    assert CLASS_NAMES["synthetic_aerial"] == AERIAL_CLASSES


def test_label_maps_use_every_class_with_uneven_frequencies(aerial):
    train = open_dataset("folder", aerial, "train", resolution=32)
    val = open_dataset("folder", aerial, "val", resolution=32)
    assert (len(train), len(val)) == (40, 20)
    assert train.class_names == AERIAL_CLASSES
    hist = label_histograms(train)
    assert hist[:, 0].sum() == 0                      # every pixel carries a class
    freq = hist[:, 1:].sum(0) / hist.sum()
    assert (freq > 0).all(), dict(zip(AERIAL_CLASSES, freq))
    assert freq.max() / freq.min() > 5
    assert AERIAL_CLASSES[int(freq.argmax())] == "crop field"
    # textured, not flat: each class varies inside its mask
    img, label = train.load_arrays(0)
    for k in np.unique(label):
        assert img[label == k].std(0).mean() > 2.0 or (label == k).sum() < 10


def test_top_down_grammar_has_no_horizon(aerial):
    """Unlike the outdoor scenes (sky on top), no class owns the top rows of most maps."""
    labels = [np.asarray(Image.open(p)) for p in
              sorted((aerial / "annotations" / "training").glob("*.png"))]
    top = [np.bincount(lab[:4].ravel()).argmax() for lab in labels]
    assert max(np.bincount(top)) < 0.8 * len(labels)
    assert len({tuple(np.unique(lab)) for lab in labels}) > 10      # varied compositions


def test_deterministic_by_seed_and_apart_from_the_outdoor_target(tmp_path):
    a = generate_aerial(tmp_path / "a", resolution=32, seed=3, n_target=20)
    b = generate_aerial(tmp_path / "b", resolution=32, seed=3, n_target=20)
    c = generate_aerial(tmp_path / "c", resolution=32, seed=4, n_target=20)
    assert _pixels(a) == _pixels(b) != _pixels(c)
    outdoor = generate_benchmark(tmp_path / "o", resolution=32, seed=3, n_source=20, n_target=20)
    first_aerial = np.asarray(Image.open(next((a / "images" / "training").glob("*.png"))))
    first_outdoor = np.asarray(Image.open(next((outdoor.target_root / "images" / "training")
                                               .glob("*.png"))))
    assert not np.array_equal(first_aerial, first_outdoor)
    assert (a / "classes.txt").read_text().split("\n")[:-1] == AERIAL_CLASSES


def test_outdoor_benchmark_is_unchanged_and_independent_of_the_aerial_module(tmp_path):
    before = generate_benchmark(tmp_path / "before", resolution=32, seed=3, n_source=20,
                                n_target=20)
    generate_aerial(tmp_path / "aerial", resolution=32, seed=3, n_target=20)
    after = generate_benchmark(tmp_path / "after", resolution=32, seed=3, n_source=20,
                               n_target=20)
    assert _pixels(before.root) == _pixels(after.root) == OUTDOOR_PIXELS_SHA256
    probe = ("import sys, cat_models.data.synthetic; "
             "print('cat_models.data.synthetic_aerial' in sys.modules)")
    imported = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    assert imported.stdout.strip() == "False"


def test_cached_once_in_its_own_folder_and_redrawn_when_interrupted(tmp_path, monkeypatch):
    monkeypatch.setenv("CAT_HARNESS_CACHE", str(tmp_path / "cache"))
    first = ensure_aerial(resolution=32, seed=1, n_target=20)
    assert first == tmp_path / "cache" / "synthetic" / "aerial-r32-s1-n20-v1"
    stamp = (first / "COMPLETE.json").stat().st_mtime_ns
    assert ensure_aerial(resolution=32, seed=1, n_target=20) == first
    assert (first / "COMPLETE.json").stat().st_mtime_ns == stamp
    (first / "COMPLETE.json").unlink()
    (first / "classes.txt").write_text("broken\n")
    ensure_aerial(resolution=32, seed=1, n_target=20)
    assert (first / "classes.txt").read_text().split("\n")[0] == "crop field"


def test_a_study_resolves_and_opens_the_aerial_target(tmp_path):
    study = parse_study({
        "name": "t", "methods": [{"affinity": "random"}], "target_sizes": [10],
        "benchmark": {"resolution": 32, "seed": 2, "n_source": 20, "n_target": 24},
        "target": {"dataset": {"kind": "synthetic_aerial"}}})
    spec = study.target.dataset
    assert spec == DatasetSpec(kind="synthetic_aerial")
    planned = resolve_dataset(spec, study, tmp_path, materialise=False)
    assert planned.root == str(aerial_folder(tmp_path / "synthetic", 32, 2, 24))
    assert not (tmp_path / "synthetic").exists()               # a plan draws nothing
    ref = resolve_dataset(spec, study, tmp_path)
    assert ref == planned and ref.kind == "folder" and ref.name == "synthetic_aerial"
    train, val = ref.open("train"), ref.open("val")
    assert (len(train), len(val)) == (24, 20) and train.class_names == AERIAL_CLASSES
    # the source stays the outdoor benchmark's source domain
    source = resolve_dataset(study.source.dataset, study, tmp_path)
    assert source.open("train").class_names == SOURCE_CLASSES

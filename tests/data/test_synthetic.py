"""The embedded benchmark: two domains, disjoint classes, ground truth, deterministic, cached."""

from __future__ import annotations

import hashlib

import numpy as np

from cat_models.data import label_histograms, open_dataset
from cat_models.data.synthetic import (
    GROUND_TRUTH,
    SOURCE_CLASSES,
    TARGET_CLASSES,
    ensure_benchmark,
    generate_benchmark,
)


def _digest(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(p.read_bytes())
    return h.hexdigest()


def test_domains_have_disjoint_names_and_ground_truth():
    assert not set(SOURCE_CLASSES) & set(TARGET_CLASSES)
    assert set(GROUND_TRUTH) == set(TARGET_CLASSES)
    assert {v for v in GROUND_TRUTH.values() if v} <= set(SOURCE_CLASSES)
    assert sum(v is None for v in GROUND_TRUTH.values()) >= 2


def test_benchmark_reads_back_in_ade_layout(small_benchmark):
    src = open_dataset("folder", small_benchmark.source_root, "train", resolution=32)
    tgt = open_dataset("folder", small_benchmark.target_root, "train", resolution=32)
    val = open_dataset("folder", small_benchmark.target_root, "val", resolution=32)
    assert (len(src), len(tgt), len(val)) == (300, 200, 50)
    assert src.class_names == SOURCE_CLASSES and tgt.class_names == TARGET_CLASSES
    # every class occurs, frequencies are uneven, and images are textured, not flat
    for ds in (src, tgt):
        freq = label_histograms(ds)[:, 1:].sum(0) / label_histograms(ds).sum()
        assert (freq > 0).all()
        assert freq.max() / freq.min() > 5
    img, label = tgt.load_arrays(0)
    for k in np.unique(label):
        assert img[label == k].std(0).mean() > 2.0 or (label == k).sum() < 10


def test_generation_is_deterministic_by_seed(tmp_path):
    a = generate_benchmark(tmp_path / "a", resolution=32, seed=3, n_source=20, n_target=20)
    b = generate_benchmark(tmp_path / "b", resolution=32, seed=3, n_source=20, n_target=20)
    c = generate_benchmark(tmp_path / "c", resolution=32, seed=4, n_source=20, n_target=20)
    assert _digest(a.root) == _digest(b.root) != _digest(c.root)


def test_ensure_benchmark_caches_and_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CAT_HARNESS_CACHE", str(tmp_path / "cache"))
    first = ensure_benchmark(resolution=32, seed=1, n_source=20, n_target=20)
    assert first.root.is_relative_to(tmp_path / "cache")
    stamp = (first.root / "COMPLETE.json").stat().st_mtime_ns
    again = ensure_benchmark(resolution=32, seed=1, n_source=20, n_target=20)
    assert again.root == first.root
    assert (again.root / "COMPLETE.json").stat().st_mtime_ns == stamp
    # an interrupted generation (no marker) is drawn again
    (first.root / "COMPLETE.json").unlink()
    (first.source_root / "classes.txt").write_text("broken\n")
    ensure_benchmark(resolution=32, seed=1, n_source=20, n_target=20)
    assert (first.source_root / "classes.txt").read_text().split()[0] == "sky"

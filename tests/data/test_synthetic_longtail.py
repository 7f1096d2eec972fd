"""The many-class, long-tailed target: more classes than the source, shared counterparts, a
long tail, its own stream; the other domains untouched."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cat_models.data import label_histograms, open_dataset
from cat_models.data.subsets import sample_subset
from cat_models.data.synthetic import SOURCE_CLASSES, TARGET_CLASSES, generate_benchmark
from cat_models.data.synthetic_aerial import AERIAL_CLASSES, generate_aerial
from cat_models.data.synthetic_domains import CLASS_NAMES, GROUND_TRUTHS, TARGET_KINDS, domain_root
from cat_models.data.synthetic_longtail import (
    LONGTAIL_CLASSES,
    LONGTAIL_GROUND_TRUTH,
    ensure_longtail,
    generate_longtail,
    longtail_folder,
)
from harness.config import SYNTHETIC_TARGET_KINDS, parse_study
from harness.stages_data import resolve_dataset
from tests.conftest import load_benchmark_script
from tests.data.test_synthetic_aerial import OUTDOOR_PIXELS_SHA256, _pixels


@pytest.fixture(scope="module")
def longtail(tmp_path_factory) -> Path:
    """The domain at 32 px: 240 training and 60 validation images."""
    return ensure_longtail(tmp_path_factory.mktemp("longtail"), resolution=32, seed=0,
                           n_target=240)


def test_more_classes_than_the_source_several_sharing_a_counterpart():
    assert len(LONGTAIL_CLASSES) == len(set(LONGTAIL_CLASSES)) > len(SOURCE_CLASSES)
    assert not set(LONGTAIL_CLASSES) & set(SOURCE_CLASSES)
    assert list(LONGTAIL_GROUND_TRUTH) == LONGTAIL_CLASSES
    counterparts = Counter(v for v in LONGTAIL_GROUND_TRUTH.values() if v)
    assert set(counterparts) <= set(SOURCE_CLASSES)
    assert max(counterparts.values()) >= 3 and sum(n > 1 for n in counterparts.values()) >= 4
    assert 1 <= sum(v is None for v in LONGTAIL_GROUND_TRUTH.values()) <= 3
    # reachable by dataset kind, by the harness's schema too
    assert GROUND_TRUTHS["synthetic_longtail"] is LONGTAIL_GROUND_TRUTH
    assert CLASS_NAMES["synthetic_longtail"] == LONGTAIL_CLASSES
    assert set(TARGET_KINDS) == set(SYNTHETIC_TARGET_KINDS) == set(GROUND_TRUTHS)


def test_every_class_drawn_with_a_long_tail(longtail):
    train = open_dataset("folder", longtail, "train", resolution=32)
    assert len(train) == 240 and train.class_names == LONGTAIL_CLASSES
    hist = label_histograms(train)
    assert hist[:, 0].sum() == 0                                   # every pixel has a class
    shown = (hist[:, 1:] > 0).mean(0)                             # share of images per class
    assert (shown > 0).all(), dict(zip(LONGTAIL_CLASSES, shown))
    assert shown.max() > 0.6 and shown.min() < 0.08 and shown.max() / shown.min() > 10
    assert LONGTAIL_CLASSES[int(shown.argmax())] == "overcast sky"
    # one sky and at most one kind of vehicle per image
    names = np.asarray(LONGTAIL_CLASSES)
    for row in hist[:, 1:] > 0:
        assert row[np.isin(names, ["overcast sky", "dusk sky"])].sum() == 1
        assert row[np.isin(names, ["taxi", "bus", "truck"])].sum() <= 1
    # a 25-image KL-greedy set shows some classes in very few images
    subset = sample_subset("kl_greedy", hist, 25, seed=0)
    per_class = (hist[subset, 1:] > 0).sum(0)
    assert per_class.min() <= 3 < per_class.max()


def test_deterministic_by_seed_on_its_own_stream_and_the_others_unchanged(tmp_path):
    a = generate_longtail(tmp_path / "a", resolution=32, seed=3, n_target=20)
    b = generate_longtail(tmp_path / "b", resolution=32, seed=3, n_target=20)
    c = generate_longtail(tmp_path / "c", resolution=32, seed=4, n_target=20)
    assert _pixels(a) == _pixels(b) != _pixels(c)
    aerial = generate_aerial(tmp_path / "aerial", resolution=32, seed=3, n_target=20)
    assert _pixels(aerial) != _pixels(a)
    outdoor = generate_benchmark(tmp_path / "o", resolution=32, seed=3, n_source=20, n_target=20)
    assert _pixels(outdoor.root) == OUTDOOR_PIXELS_SHA256
    assert (a / "classes.txt").read_text().split("\n")[:-1] == LONGTAIL_CLASSES


def test_a_study_resolves_it_in_its_own_cached_folder(tmp_path):
    study = parse_study({
        "name": "t", "methods": [{"affinity": "random"}], "target_sizes": [10],
        "benchmark": {"resolution": 32, "seed": 2, "n_source": 20, "n_target": 24},
        "target": {"dataset": {"kind": "synthetic_longtail"}}})
    planned = resolve_dataset(study.target.dataset, study, tmp_path, materialise=False)
    folder = longtail_folder(tmp_path / "synthetic", 32, 2, 24)
    assert planned.root == str(folder) and folder.name == "longtail-r32-s2-n24-v1"
    assert not (tmp_path / "synthetic").exists()                 # a plan draws nothing
    ref = resolve_dataset(study.target.dataset, study, tmp_path)
    assert ref == planned and ref.name == "synthetic_longtail"
    assert ref.open("train").class_names == LONGTAIL_CLASSES
    assert domain_root("synthetic_longtail", tmp_path / "synthetic", 32, 2, 20, 24) == folder


def test_preview_colours_one_per_class_and_distinct():
    for kind, names in (("synthetic_longtail", LONGTAIL_CLASSES),
                        ("synthetic_target", TARGET_CLASSES),
                        ("synthetic_aerial", AERIAL_CLASSES)):
        colours = load_benchmark_script("domain_preview").legend_colours(kind)
        assert len(colours) == len(names) + 1
        assert len({tuple(c) for c in colours[1:]}) == len(names)

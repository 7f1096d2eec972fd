"""The paper's greedy KL-to-uniform few-shot sampler (paper §4.1)."""

from __future__ import annotations

import numpy as np
import pytest

from cat_models.data import (
    kl_greedy_subset,
    label_histograms,
    load_subset,
    open_dataset,
    random_subset,
    rare_class_subset,
    sample_subset,
    save_subset,
)
from cat_models.data.subsets import SAMPLERS, TAKES_RARE, kl_to_uniform


@pytest.fixture(scope="module")
def target_hist(small_benchmark):
    ds = open_dataset("folder", small_benchmark.target_root, "train", resolution=32)
    return label_histograms(ds)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("size", [10, 25, 50])
def test_greedy_is_closer_to_uniform_than_random(target_hist, seed, size):
    classes = np.arange(1, target_hist.shape[1])
    greedy = kl_to_uniform(target_hist[kl_greedy_subset(target_hist, size, seed)].sum(0), classes)
    rand = [kl_to_uniform(target_hist[random_subset(len(target_hist), size, s)].sum(0), classes)
            for s in range(seed * 10, seed * 10 + 5)]
    assert greedy < min(rand)


def test_deterministic_and_nested(target_hist):
    a = kl_greedy_subset(target_hist, 40, seed=7)
    assert a == kl_greedy_subset(target_hist, 40, seed=7)
    assert len(set(a)) == 40
    assert kl_greedy_subset(target_hist, 15, seed=7) == a[:15]
    assert kl_greedy_subset(target_hist, 40, seed=8) != a


def test_kl_of_uniform_counts_is_zero_and_unlabeled_is_ignored():
    counts = np.array([999, 5, 5, 5])
    assert kl_to_uniform(counts, np.array([1, 2, 3])) == pytest.approx(0.0, abs=1e-6)
    assert kl_to_uniform(np.array([0, 10, 5, 1]), np.array([1, 2, 3])) > 0.1


def test_bad_sizes_and_index_file_round_trip(tmp_path, target_hist):
    with pytest.raises(ValueError, match="between 1 and the pool size 200"):
        kl_greedy_subset(target_hist, 201, 0)
    idx = kl_greedy_subset(target_hist, 5, 0)
    path = save_subset(tmp_path / "s.json", idx, seed=0, dataset="target")
    assert load_subset(path) == idx


@pytest.mark.parametrize("per_class", [0, 1, 2])
def test_rare_classes_are_shown_by_exactly_per_class_images(target_hist, per_class):
    rare = [6, 8]   # house, beach
    idx = rare_class_subset(target_hist, 25, 3, rare, per_class)
    assert len(idx) == len(set(idx)) == 25
    shown = target_hist[idx][:, rare] > 0
    assert shown.sum(0).tolist() == [per_class, per_class]
    assert shown.sum(1).max() <= 1   # no image shows two rare classes
    # the rest of the set is the KL-greedy draw over the images without the rare classes
    pool = np.flatnonzero((target_hist[:, rare] == 0).all(1))
    greedy = kl_greedy_subset(target_hist[pool], 25 - 2 * per_class, 3)
    assert idx[:25 - 2 * per_class] == [int(pool[i]) for i in greedy]
    assert idx == rare_class_subset(target_hist, 25, 3, rare, per_class)
    assert idx != rare_class_subset(target_hist, 25, 4, rare, per_class)
    # the other classes are still in the set, and the KL-greedy set showed the rare ones
    assert (target_hist[idx][:, 1:].sum(0) > 0).sum() == target_hist.shape[1] - 1 - 2 * (
        per_class == 0)
    assert (target_hist[kl_greedy_subset(target_hist, 25, 3)][:, rare] > 0).sum(0).min() > 2


def test_rare_class_subset_names_what_is_wrong(target_hist):
    n_cols = target_hist.shape[1]
    with pytest.raises(ValueError, match=f"distinct class ids 1..{n_cols - 1}"):
        rare_class_subset(target_hist, 25, 0, [0], 1)
    with pytest.raises(ValueError, match="distinct"):
        rare_class_subset(target_hist, 25, 0, [3, 3], 1)
    with pytest.raises(ValueError, match="must exceed the 4 rare-class images"):
        rare_class_subset(target_hist, 4, 0, [3, 5], 2)
    with pytest.raises(ValueError, match="per_class must be >= 0"):
        rare_class_subset(target_hist, 25, 0, [3], -1)
    # the sky is in every image: no image shows the house without it, none is without it
    with pytest.raises(ValueError, match="rare class 6: 0 images show it without the other"):
        rare_class_subset(target_hist, 25, 0, [1, 6], 1)
    with pytest.raises(ValueError, match="0 images show none of the rare classes, 24 needed"):
        rare_class_subset(target_hist, 25, 0, [1], 1)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_gives_nested_seeded_sets(target_hist, sampler):
    """A study's sizes of one seed are nested whatever the sampler (a trial at 50 images sees
    the 25 of the smaller trial), and the seed decides the set."""
    rare = [6, 8] if sampler in TAKES_RARE else []
    sets = {size: sample_subset(sampler, target_hist, size, 5, rare, 1) for size in (10, 25, 50)}
    assert [len(set(s)) for s in sets.values()] == [10, 25, 50]
    assert set(sets[10]) <= set(sets[25]) <= set(sets[50])
    assert sets[25] == sample_subset(sampler, target_hist, 25, 5, rare, 1)
    assert set(sets[25]) != set(sample_subset(sampler, target_hist, 25, 6, rare, 1))


def test_samplers_differ_as_documented(target_hist):
    greedy = sample_subset("kl_greedy", target_hist, 25, 2)
    assert greedy == kl_greedy_subset(target_hist, 25, 2)
    assert sample_subset("random", target_hist, 25, 2) == random_subset(len(target_hist), 25, 2)
    rare = sample_subset("rare_classes", target_hist, 25, 2, [6, 8], 0)
    assert rare == rare_class_subset(target_hist, 25, 2, [6, 8], 0)
    assert (target_hist[rare][:, [6, 8]] > 0).sum() == 0 < (target_hist[greedy][:, [6, 8]] > 0).sum()
    with pytest.raises(ValueError, match=r"unknown few-shot sampler 'kl'; expected one of \["):
        sample_subset("kl", target_hist, 25, 2)

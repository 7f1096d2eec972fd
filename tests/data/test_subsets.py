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
    save_subset,
)
from cat_models.data.subsets import kl_to_uniform


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

"""Iterations to convergence: a pure function of the metric history."""

from __future__ import annotations

import numpy as np
import pytest

from cat_models.metrics import iterations_to_convergence, moving_average


def test_moving_average_is_trailing():
    np.testing.assert_allclose(moving_average([3, 1, 2, 6], 2), [3, 2, 1.5, 4])
    np.testing.assert_allclose(moving_average([3, 1, 2], 1), [3, 1, 2])


def test_decreasing_fid_converges_when_it_enters_the_band_for_good():
    iters = [100, 200, 300, 400, 500, 600]
    fid = [100.0, 60.0, 50.0, 49.0, 51.0, 50.0]
    # window 1: best 49, band 5% -> <= 51.45: from index 2 (300) on everything is inside
    assert iterations_to_convergence(iters, fid, tolerance=0.05, window=1) == 300
    # tighter band (1%: <= 49.49) -> 51 at 500 is outside, 50 at 600 outside too -> None
    assert iterations_to_convergence(iters, fid, tolerance=0.01, window=1) is None


def test_smoothing_spreads_a_spike_over_the_window():
    iters = list(range(1, 9))
    fid = [90, 50, 40, 40, 80, 40, 40, 40]
    assert iterations_to_convergence(iters, fid, tolerance=0.1, window=1) == 6
    # window 3 smooths to [90, 70, 60, 43.3, 53.3, 53.3, 53.3, 40]: best 40, band 44
    assert iterations_to_convergence(iters, fid, tolerance=0.1, window=3) == 8


def test_higher_is_better_for_miou():
    iters = [10, 20, 30, 40]
    miou = [0.1, 0.5, 0.58, 0.6]
    assert iterations_to_convergence(iters, miou, 0.05, 1, lower_is_better=False) == 30
    assert iterations_to_convergence(iters, miou, 0.2, 1, lower_is_better=False) == 20


def test_nan_is_never_within_and_edge_cases():
    assert iterations_to_convergence([1, 2, 3], [np.nan, 10.0, 10.0], 0.0, 1) == 2
    assert iterations_to_convergence([1, 2], [10.0, np.nan], 0.1, 1) is None
    assert iterations_to_convergence([], [], 0.1) is None
    assert iterations_to_convergence([5], [3.0], 0.0) == 5
    with pytest.raises(ValueError, match="2 iterations but 1 values"):
        iterations_to_convergence([1, 2], [1.0])

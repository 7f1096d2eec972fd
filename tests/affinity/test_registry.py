"""Estimators by name and the seeded random baseline."""

from __future__ import annotations

import numpy as np
import pytest

from cat_models.affinity import (
    AffinityError,
    AffinityInputs,
    available_estimators,
    estimate_affinity,
    random_affinity,
    register_estimator,
)


def test_builtin_estimators_are_registered():
    assert {"text", "segmentation", "features", "combination", "average", "random"} <= set(
        available_estimators())
    with pytest.raises(AffinityError, match="unknown affinity method 'ibot'"):
        estimate_affinity("ibot", AffinityInputs())
    with pytest.raises(AffinityError, match="registered twice"):
        register_estimator("text")(lambda inputs: None)


def test_random_baseline_is_seeded_and_normalised():
    a = random_affinity(["a", "b", "c"], ["x", "y"], seed=3)
    b = random_affinity(["a", "b", "c"], ["x", "y"], seed=3)
    c = random_affinity(["a", "b", "c"], ["x", "y"], seed=4)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.allclose(a.values, c.values)
    np.testing.assert_allclose(a.values.sum(0), 1.0)
    expected = np.random.default_rng(3).random((3, 2))
    np.testing.assert_allclose(a.values, expected / expected.sum(0))
    via_registry = estimate_affinity(
        "random", AffinityInputs(source_names=["a", "b", "c"], target_names=["x", "y"], seed=3))
    np.testing.assert_array_equal(via_registry.values, a.values)
    assert via_registry.provenance == {"seed": 3}


def test_missing_names_are_reported():
    with pytest.raises(AffinityError, match="target_names: no class names"):
        estimate_affinity("random", AffinityInputs(source_names=["a"]))

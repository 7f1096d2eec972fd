"""Shared fixtures: a small embedded benchmark generated once per test session."""

from __future__ import annotations

import os

import pytest
import torch

# Tests run on 2 shared cores: one intra-op thread keeps parallel processes from thrashing.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The suite runs on two pytest-xdist workers (`-n auto --dist loadgroup`, pyproject.toml).
# Tests that start Ray (a local cluster, or `python -m harness.run` processes that start one)
# stay together on one worker, one after another: two local clusters at once would each plan
# with every CPU, and a run's clean-up of stale Ray processes must never meet another test's.
RAY_MODULES = ("test_cluster", "test_end_to_end", "test_faults", "test_piti_trials",
               "test_run_cli", "test_source_seeds", "test_trials")


def pytest_collection_modifyitems(config, items):
    for item in items:
        uses_ray = "cluster" in getattr(item, "fixturenames", ())   # tests/harness/conftest.py
        if uses_ray or (item.path.parent.name == "harness" and item.path.stem in RAY_MODULES):
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.fixture(scope="session")
def small_benchmark(tmp_path_factory):
    """The embedded benchmark at 32 px with few images (seconds to draw)."""
    from cat_models.data.synthetic import ensure_benchmark

    root = tmp_path_factory.mktemp("bench")
    return ensure_benchmark(root, resolution=32, seed=0, n_source=300, n_target=200)


@pytest.fixture(scope="session")
def bench64(tmp_path_factory):
    """The embedded benchmark at 64 px, the size the shipped studies use (about 10 s)."""
    from cat_models.data.synthetic import ensure_benchmark

    root = tmp_path_factory.mktemp("bench64")
    return ensure_benchmark(root, resolution=64, seed=0, n_source=2000, n_target=1000)

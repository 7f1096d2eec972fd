"""Shared fixtures: a small embedded benchmark generated once per test session."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

# Tests run on 2 shared cores: one intra-op thread keeps parallel processes from thrashing.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The suite runs on two pytest-xdist workers (`-n auto`, pyproject.toml), and tests that start
# Ray run on both: each starts its own local Ray (a `cluster` fixture, or a `python -m
# harness.run` process), so two can run at once on the two cores. That is safe because a run
# only ever stops the Ray processes of drivers that are gone (`harness.ray_session`), never
# those of another live run. (Until 2026-12-04 this file marked those tests for one xdist
# group, meaning to run them one after another; the mark was added after xdist had read the
# groups, so it never took effect, and every CI run since 2026-12-02 ran them concurrently.)


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


def load_benchmark_script(name: str):
    """Import `benchmarks/<name>.py` (a script, not a package module) for its tests, with
    `benchmarks/` on the import path as `python benchmarks/<name>.py` has it (the scripts
    import their sibling modules, e.g. `fidelity_common`)."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    path = folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

"""A tiny study (32 px benchmark, 10-iteration source model, 4-iteration trials) and its
stage artifacts, built once per test session without Ray.

`tiny_study(cache, out, **changes)` gives the study as a plain dict (what a YAML holds);
`write_study` writes it; `tiny_artifacts` runs the real stage functions on it, with the
stages' Ray tasks called in-process, so the trial tests need no cluster.
"""

from __future__ import annotations

import copy
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("CAT_TUNE_VERBOSE", "0")

BASE_STUDY: dict[str, Any] = {
    "name": "tiny",
    "resolution": 32,
    "benchmark": {"resolution": 32, "seed": 0, "n_source": 60, "n_target": 60},
    "source": {"pretrain": {"iterations": 10, "batch_size": 4, "seed": 0}},
    "target_sizes": [20],
    "seeds": [0],
    "methods": [{"label": "no-cat", "baseline": "cat", "affinity": "random"},
                {"baseline": "freezed"}],
    "training": {"iterations": 4, "stage1_iterations": 2, "batch_size": 4, "freeze_d": 1,
                 "eval_every": 2, "checkpoint_every": 2},
    "evaluation": {"n_samples": 4, "segmenter_iterations": 10, "final_samples_grid": 3},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
}
LABELS = ("no-cat", "freezed")


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` applied; nested dicts are merged, everything else replaced."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_study(cache: Path, out: Path, **changes: Any) -> dict[str, Any]:
    return merge(BASE_STUDY, {"cache_dir": str(cache), "output_dir": str(out), **changes})


def write_study(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env() -> dict[str, str]:
    """Environment for `python -m harness.run` children: no inherited cluster address."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_USAGE_STATS_ENABLED="0", CAT_TUNE_VERBOSE="0", HF_HUB_OFFLINE="1",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return env


def run_stage_tasks_inline(fn: Callable[..., Any], *args: Any, **_: Any) -> Any:
    """Stand-in for `harness.stages_common.run_task`: the task function, called in this process."""
    return fn(*args)


def build_artifacts(study, cache, out):
    """The study's Artifacts, built by the real stage functions, Ray tasks run inline."""
    from harness import stages, stages_common

    log: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stages_common, "run_task", run_stage_tasks_inline)
        source, target = stages.stage_datasets(study, cache, "tiny", log.append)
        subsets = stages.stage_subsets(study, target, cache, "tiny", log.append)
        return stages.prepare_artifacts(study, source, target, subsets, cache, out,
                                        log.append, {"CPU": 1})


@pytest.fixture(scope="session")
def harness_cache(tmp_path_factory) -> Path:
    """One stage cache for the session (stages are content-addressed, so sharing is safe)."""
    return tmp_path_factory.mktemp("harness-cache")


@pytest.fixture(scope="session")
def tiny_artifacts(harness_cache, tmp_path_factory):
    """(Study, Artifacts) of the tiny study, built by the real stage functions without Ray."""
    from harness.config import parse_study

    out = tmp_path_factory.mktemp("tiny-out")
    study = parse_study(tiny_study(harness_cache, out), "tiny")
    return study, build_artifacts(study, harness_cache, out)

# The tiny PITI study: the same benchmark, a 4-iteration embedded-preset source model, 2-step
# DDIM sampling, 4-iteration trials (CAT with random A; from GLIDE with a 2-iteration stage 1).
PITI_STUDY: dict[str, Any] = merge(
    {k: v for k, v in BASE_STUDY.items() if k not in ("methods", "source")},
    {"model": "piti",
     "piti": {"pretrain": {"iterations": 4, "batch_size": 4}, "sampling_steps": 2},
     "methods": [{"label": "cat-random", "baseline": "cat", "affinity": "random",
                  "options": {"prompt_count": 2}},
                 {"baseline": "from_glide"}],
     "training": {"freeze_d": 0}})


@pytest.fixture(scope="session")
def tiny_piti_artifacts(harness_cache, tmp_path_factory):
    """(Study, Artifacts) of the tiny PITI study, built by the real stage functions without
    Ray (datasets, segmenter and statistics are shared with the OASIS study's)."""
    from harness.config import parse_study

    out = tmp_path_factory.mktemp("tiny-piti-out")
    study = parse_study(merge(PITI_STUDY, {"cache_dir": str(harness_cache),
                                           "output_dir": str(out)}), "tiny-piti")
    return study, build_artifacts(study, harness_cache, out)


@pytest.fixture(scope="module")
def cluster():
    """A local 2-CPU Ray for one test module (Ray Train V2, offline, this checkout importable)."""
    import ray

    from harness.pipeline import worker_env

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {**worker_env(), "HF_HUB_OFFLINE": "1"}})
    yield ray.cluster_resources()
    ray.shutdown()

"""Ray Tune trials: the in-process single-worker path and the TorchTrainer path give the same
numbers; a trial that runs in the process a finished trial leaves behind gives the numbers of
a fresh process; a 2-worker DDP trial (gloo) completes and reports rank 0's evaluations.

Also measures the TorchTrainer start-up overhead (printed; run with -s to see it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path

import pytest

from harness import trials
from harness.config import parse_study

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
COMPARED = ("fid", "kid", "miou", "g_total", "d_total")


def _one_method(study, **changes):
    """The tiny study with only the CAT (random A) method, no retries, plus `changes`."""
    data = study.model_dump(mode="json")
    data["methods"] = [m for m in data["methods"] if m["label"] == "no-cat"]
    data["resources"]["max_failures"] = 0
    for key, value in changes.items():
        data[key] = {**data[key], **value}
    return parse_study(data)


def _with_study(art, study):
    return dataclasses.replace(art, study=study)


def _rows(grid) -> list[dict]:
    (result,) = list(grid)
    assert result.error is None, result.error
    lines = (Path(result.path) / "result.json").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _all_cpus_free(cluster, wait_s: float = 10.0) -> bool:
    """True once every CPU is available again (no placement group left behind)."""
    import ray

    deadline = time.monotonic() + wait_s
    while ray.available_resources().get("CPU", 0) < cluster["CPU"] - 1e-6:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _torchtrainer_trainable(study, artifacts, storage):
    """`trials.trainable` forced onto the TorchTrainer driver, whatever workers_per_trial."""
    from ray import tune

    from harness.tune import DRIVER_CPU

    fn = tune.with_parameters(trials.tune_driver, artifacts=artifacts, storage=storage)
    return tune.with_resources(fn, {"CPU": DRIVER_CPU})


@pytest.fixture(scope="module")
def in_process(cluster, tiny_artifacts, tmp_path_factory):
    study, art = tiny_artifacts
    one = _one_method(study)
    out = tmp_path_factory.mktemp("in-process")
    start = time.perf_counter()
    grid = trials.run_trials(one, _with_study(art, one), out, cluster, False, lambda _: None)
    return _rows(grid), time.perf_counter() - start


@pytest.mark.timeout(300)
def test_single_worker_in_process_equals_torchtrainer(in_process, cluster, tiny_artifacts,
                                                      tmp_path, monkeypatch):
    study, art = tiny_artifacts
    one = _one_method(study)
    monkeypatch.setattr(trials, "trainable", _torchtrainer_trainable)
    start = time.perf_counter()
    grid = trials.run_trials(one, _with_study(art, one), tmp_path, cluster, False,
                             lambda _: None)
    seconds = time.perf_counter() - start
    rows, inproc_seconds = in_process
    tt_rows = _rows(grid)
    assert [r["iteration"] for r in rows] == [r["iteration"] for r in tt_rows] == [2, 4]
    for key in COMPARED:
        assert [r[key] for r in tt_rows] == [r[key] for r in rows], key
    final, tt_final = rows[-1], tt_rows[-1]
    for key in ("final_fid", "final_kid", "final_miou", "best_fid", "best_miou",
                "iters_to_convergence", "source_ckpt_hash", "method"):
        assert tt_final[key] == final[key], key
    # the TorchTrainer run kept its own checkpoints under the study's storage and gave its
    # workers' CPUs back (a trial killed mid-shutdown leaks its placement group)
    assert list(tmp_path.glob("train-*/checkpoint_*"))
    assert _all_cpus_free(cluster)
    print(f"\n[timing] one 4-iteration trial: in-process {inproc_seconds:.1f}s, "
          f"TorchTrainer {seconds:.1f}s, overhead {seconds - inproc_seconds:.1f}s")


@pytest.mark.timeout(300)
def test_a_reused_trial_process_gives_the_numbers_of_a_fresh_one(in_process, cluster,
                                                                 tiny_artifacts, tmp_path):
    """One trial at a time: the second trial (no-cat, seed 0) runs in the process the first
    (freezed) leaves behind, and reports what the same trial reported alone in a new one."""
    study, art = tiny_artifacts
    data = study.model_dump(mode="json")
    data["methods"] = sorted(data["methods"], key=lambda m: m["label"] != "freezed")
    data["resources"].update(max_failures=0, max_concurrent_trials=1)
    both = parse_study(data)
    assert [m.label for m in both.methods] == ["freezed", "no-cat"]
    assert trials.reuses_processes(both)
    grid = trials.run_trials(both, _with_study(art, both), tmp_path, cluster, False,
                             lambda _: None)
    results = sorted(grid, key=lambda r: Path(r.path).name)
    assert [r.error for r in results] == [None, None]
    rows = {r.config["method"]: [json.loads(x) for x in
                                 (Path(r.path) / "result.json").read_text().splitlines()]
            for r in results}
    # the same process ran both trials, one after the other
    assert {r["pid"] for r in rows["freezed"]} == {r["pid"] for r in rows["no-cat"]}
    assert rows["freezed"][-1]["timestamp"] <= rows["no-cat"][0]["timestamp"]
    fresh = in_process[0]
    assert [r["iteration"] for r in rows["no-cat"]] == [r["iteration"] for r in fresh]
    for key in COMPARED:
        assert [r[key] for r in rows["no-cat"]] == [r[key] for r in fresh], key
    assert all(r["pid"] != rows["no-cat"][0]["pid"] for r in fresh)


@pytest.mark.timeout(300)
def test_two_worker_ddp_trial_reports_rank0_metrics(in_process, cluster, tiny_artifacts,
                                                    tmp_path):
    study, art = tiny_artifacts
    # one retry, as the harness's default: Ray 2.60 can remove a live multi-worker run's
    # placement group on a loaded machine (docs/failure_handling.md); a retry restarts from
    # the last checkpoint and reports the same rows
    two = _one_method(study, resources={"workers_per_trial": 2, "cpus_per_worker": 0.9,
                                        "max_failures": 1})
    assert trials.study_tune.total_trial_demand(two)["CPU"] <= cluster["CPU"]
    start = time.perf_counter()
    grid = trials.run_trials(two, _with_study(art, two), tmp_path, cluster, False,
                             lambda _: None)
    seconds = time.perf_counter() - start
    rows = _rows(grid)
    # only rank 0 evaluates: every row Tune kept holds its FID
    assert [r["iteration"] for r in rows] == [2, 4]
    assert all(math.isfinite(r["fid"]) and 0 <= r["miou"] <= 1 for r in rows)
    assert rows[-1]["final_fid"] == rows[-1]["fid"] and "iters_to_convergence" in rows[-1]
    assert (rows[-1]["method"], rows[-1]["target_size"], rows[-1]["seed"]) == ("no-cat", 20, 0)
    (result,) = list(grid)
    samples = Path(result.path) / "samples"
    assert sorted(p.name for p in samples.iterdir()) == ["final.png", "iter_000002.png",
                                                         "iter_000004.png"]
    # checkpoints stay with the Train run (Tune gets their paths); both are kept (num_to_keep=2)
    kept = [Path(r["checkpoint_path"]) for r in rows]
    assert all((p / "latest.pt").is_file() and (p / "history.json").is_file() for p in kept)
    assert _all_cpus_free(cluster)
    # DDP on the same global batch follows the single process closely (Adam amplifies float
    # noise on batch-norm-fed biases, so not bit for bit; tests/oasis/test_train.py)
    single = in_process[0]
    assert rows[0]["fid"] == pytest.approx(single[0]["fid"], rel=0.01)
    print(f"\n[timing] 2-worker DDP trial: {seconds:.1f}s")


@pytest.mark.parametrize("gpus, backend", [(0, "gloo"), (0.125, "gloo"), (0.5, "gloo"),
                                           (1, "nccl"), (2, "nccl")])
def test_ddp_backend_is_nccl_only_with_a_whole_gpu_per_worker(gpus, backend):
    # two ranks of one group on a shared GPU are refused by NCCL ("Duplicate GPU detected",
    # seen on a one-GPU machine); gloo carries CUDA tensors there
    assert trials.ddp_backend(gpus) == backend


def test_ray_workers_run_with_one_malloc_arena(cluster):
    # a reused trial process runs each trial in a new thread; with glibc's default arenas it
    # kept ~100 MB of every finished trial (measured), so the harness's workers get one arena
    import ray

    @ray.remote(num_cpus=0)
    def arenas() -> str | None:
        return os.environ.get("MALLOC_ARENA_MAX")

    assert ray.get(arenas.remote()) == "1"

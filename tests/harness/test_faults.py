"""Faults with real processes and a real local Ray (no mocks of Ray): a trial process killed,
one DDP worker killed, the driver killed mid-study, corrupt cache artifacts and checkpoints, a
non-finite loss. The test hooks of `harness.faults` (environment variables) record each trial
start's pid and slow the steps down so that a kill lands between two checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import trials
from harness.cache import MARKER, StageRunner, cached_stage, stage_dir
from harness.config import parse_study
from tests.harness.conftest import subprocess_env, tiny_study, write_study

REPO = Path(__file__).resolve().parents[2]
DELAY_S = 0.4          # per training step: a 10-iteration trial trains for ~4 s


# ----------------------------------------------------------------------------- corrupt cache
def _build_source_and_affinity(out: Path) -> None:
    torch.save({"w": torch.arange(1000.0)}, out / "source.pt")
    np.save(out / "affinity.npy", np.ones((12, 10)))


def _damage(folder: Path, how: str) -> str:
    if how == "truncated-source":
        data = (folder / "source.pt").read_bytes()
        (folder / "source.pt").write_bytes(data[: len(data) // 2])
        return f"{folder / 'source.pt'}: cached artifact is truncated"
    if how == "half-written-npy":
        data = (folder / "affinity.npy").read_bytes()
        (folder / "affinity.npy").write_bytes(data[:-50])
        return f"{folder / 'affinity.npy'}: cached artifact is half-written"
    if how == "changed-content":
        np.save(folder / "affinity.npy", np.zeros((12, 10)))
        return f"{folder / 'affinity.npy'}: cached artifact has content hash"
    (folder / MARKER).unlink()
    return f"{folder}: no completion marker {MARKER}"


@pytest.mark.parametrize("how", ["truncated-source", "half-written-npy", "changed-content",
                                 "no-marker"])
def test_corrupt_stage_artifact_is_rebuilt_with_one_line_saying_why(tmp_path, how):
    inputs = {"k": 1}
    lines: list[str] = []
    built = cached_stage(tmp_path, "source-model", inputs, _build_source_and_affinity,
                         log=lines.append)
    recorded = json.loads((built.path / MARKER).read_text())["files"]
    assert sorted(recorded) == ["affinity.npy", "source.pt"]
    expected = _damage(built.path, how)

    # the plan sees it too: not cached, one line with the path and the reason
    plan_lines: list[str] = []
    planner = StageRunner(tmp_path, plan_lines.append, plan=True)
    assert planner.stage("source-model", inputs, _build_source_and_affinity) is None
    assert planner.rows == {"source-model": False}
    assert len(plan_lines) == 1 and expected in plan_lines[0], plan_lines

    lines.clear()
    again = cached_stage(tmp_path, "source-model", inputs, _build_source_and_affinity,
                         log=lines.append)
    assert not again.cached
    assert lines[0].startswith("[stage] source-model: rebuilding: ") and expected in lines[0]
    torch.load(again.path / "source.pt")                         # intact again
    assert np.load(again.path / "affinity.npy").sum() == 120
    assert cached_stage(tmp_path, "source-model", inputs, _build_source_and_affinity,
                        log=lines.append).cached


def test_stage_hash_is_the_library_one(tmp_path):
    from cat_models.data.cache import file_hash as library_hash
    from harness.cache import file_hash

    assert file_hash is library_hash
    built = cached_stage(tmp_path, "x", {}, _build_source_and_affinity, log=lambda _: None)
    recorded = json.loads((built.path / MARKER).read_text())["files"]
    assert recorded["source.pt"] == library_hash(built.path / "source.pt")
    assert stage_dir(tmp_path, "x", {}) == built.path


def test_corrupt_trial_checkpoint_on_restore_names_the_path(tmp_path):
    from ray.train import Checkpoint

    from cat_models.errors import CheckpointError

    ckpt = tmp_path / "checkpoint_000001"
    ckpt.mkdir()
    torch.save({"step": 4, "G": torch.zeros(100)}, ckpt / "latest.pt")
    data = (ckpt / "latest.pt").read_bytes()
    (ckpt / "latest.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError) as err:
        trials._restore_dir(Checkpoint.from_directory(str(ckpt)), str(tmp_path / "scratch"))
    message = str(err.value)
    assert message.startswith(f"{ckpt}/latest.pt: trial checkpoint to restore from is damaged")
    assert "\n" not in message


def test_non_finite_loss_stops_training_at_its_iteration():
    from cat_models.oasis import build_plan, preset
    from cat_models.oasis.train import NonFiniteLossError, train_oasis
    from harness import faults

    cfg = preset("bench64", resolution=(32, 32), channels_g=2, channels_d=2, spade_hidden=4,
                 z_dim=2, num_res_blocks=4, batch_size=2)
    data = [{"image": torch.zeros(3, 32, 32), "label": torch.ones(32, 32, dtype=torch.long)}
            for _ in range(4)]
    from cat_models.oasis import train as train_module

    real = train_module.train_step
    try:
        faults.wrap_train_step(3)
        plan = build_plan("scratch", None, None, 2, cfg=cfg, seed=0)
        with pytest.raises(NonFiniteLossError, match=r"^non-finite loss at iteration 3 \("):
            train_oasis(plan, data, cfg, 6)
    finally:
        train_module.train_step = real


# ----------------------------------------------------------------------------- Ray faults
@pytest.fixture(scope="module")
def fault_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def cluster(fault_dir):
    import ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    env = {"RAY_TRAIN_V2_ENABLED": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "CAT_FAULT_DIR": str(fault_dir), "CAT_FAULT_STEP_DELAY_S": str(DELAY_S),
           "CAT_FAULT_NAN": "freezed@3"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": env})
    yield ray.cluster_resources()
    ray.shutdown()


def _starts(fault_dir: Path) -> list[dict]:
    path = fault_dir / "starts.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def _rows(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def _study(study, methods: tuple[str, ...], **changes):
    data = study.model_dump(mode="json")
    data["methods"] = [m for m in data["methods"] if m["label"] in methods]
    data["training"].update(iterations=10, eval_every=2, checkpoint_every=2)
    for key, value in changes.items():
        data[key] = {**data[key], **value}
    return parse_study(data)


def _kill_when(fault_dir: Path, out: Path, rank: int | None, min_iteration: int,
               killed: list[dict]) -> threading.Thread:
    """Background killer: SIGKILL the trial process (or DDP worker `rank`) once the trial has
    reported `min_iteration` (a checkpoint is there)."""
    def run() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            for trial in out.glob("tune/train_*"):
                if any(r.get("iteration", 0) >= min_iteration for r in _rows(trial)):
                    target = [s for s in _starts(fault_dir) if s["trial"] == trial.name
                              and s["rank"] == rank]
                    if target:
                        os.kill(target[-1]["pid"], signal.SIGKILL)
                        killed.append({**target[-1], "after": max(
                            r["iteration"] for r in _rows(trial))})
                        return
            time.sleep(0.1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_killed_trial_process_is_retried_from_its_checkpoint(cluster, tiny_artifacts,
                                                             fault_dir, tmp_path):
    study, art = tiny_artifacts
    one = _study(study, ("no-cat",), resources={"max_failures": 1})
    killed: list[dict] = []
    thread = _kill_when(fault_dir, tmp_path, None, 4, killed)
    grid = trials.run_trials(one, dataclasses.replace(art, study=one), tmp_path, cluster,
                             False, lambda _: None)
    thread.join(5)
    assert killed, "the trial finished before it could be killed"
    (result,) = list(grid)
    assert result.error is None
    trial = Path(result.path)
    rows = _rows(trial)
    iterations = [r["iteration"] for r in rows]
    assert iterations[-1] == 10 and rows[-1]["done"] is True
    assert {2, 4} <= set(iterations)                            # reports before the kill kept
    redone = [i for i, n in Counter(iterations).items() if n > 1]
    assert len(redone) <= one.training.checkpoint_every // one.training.eval_every
    starts = [s for s in _starts(fault_dir) if s["trial"] == trial.name]
    assert [s["restored"] for s in starts] == [False, True]     # retried once, from a checkpoint
    assert starts[0]["pid"] == killed[0]["pid"] != starts[1]["pid"]


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_killed_ddp_worker_restores_from_the_last_checkpoint(cluster, tiny_artifacts,
                                                             fault_dir, tmp_path):
    study, art = tiny_artifacts
    two = _study(study, ("no-cat",), resources={"workers_per_trial": 2, "cpus_per_worker": 0.9,
                                                "max_failures": 1})
    killed: list[dict] = []
    thread = _kill_when(fault_dir, tmp_path, 1, 4, killed)
    grid = trials.run_trials(two, dataclasses.replace(art, study=two), tmp_path, cluster,
                             False, lambda _: None)
    thread.join(5)
    assert killed, "the trial finished before its worker could be killed"
    (result,) = list(grid)
    assert result.error is None, result.error
    rows = _rows(Path(result.path))
    # (Ray Train's reports reach Tune without `done`: train_worker drops it on purpose)
    assert rows[-1]["iteration"] == 10 and "final_fid" in rows[-1]
    starts = [s for s in _starts(fault_dir) if s["trial"] == Path(result.path).name]
    rank1 = [s["restored"] for s in starts if s["rank"] == 1]
    assert rank1 == [False, True]                  # the worker group restarted from a checkpoint


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_non_finite_loss_fails_its_trial_without_retry_and_the_table_marks_it(
        cluster, tiny_artifacts, fault_dir, tmp_path):
    from harness.analysis import analyze_study
    from harness.pipeline import write_resolved

    study, art = tiny_artifacts
    both = _study(study, ("no-cat", "freezed"), resources={"max_failures": 2})
    write_resolved(both, tmp_path, ["method"], "tiny")
    lines: list[str] = []
    grid = trials.run_trials(both, dataclasses.replace(art, study=both), tmp_path, cluster,
                             False, lines.append)
    by_method = {r.config["method"]: r for r in grid}
    assert by_method["no-cat"].error is None
    assert _rows(Path(by_method["no-cat"].path))[-1]["iteration"] == 10
    failed = by_method["freezed"]
    assert failed.error is not None
    summary = [x for x in lines if x.startswith("[trials] failed trial")]
    assert len(summary) == 1 and "NonFiniteLossError: non-finite loss at iteration 3" in \
        summary[0] and "ray::" not in summary[0]
    assert grid.outcome == {"finished": 1, "failed": 1, "interrupted": 0}
    starts = [s for s in _starts(fault_dir) if s["trial"] == Path(failed.path).name]
    # the retry Tune starts stops at once (it would fail the same way): no training again
    error_text = (Path(failed.path) / "error.txt").read_text()
    assert "not retried" in error_text or len(starts) == 1
    assert len([s for s in starts if not s["restored"]]) <= 1
    analyze_study(tmp_path, log=lambda _: None)
    table = (tmp_path / "analysis" / "tables" / "main.md").read_text()
    freezed_row = next(x for x in table.splitlines() if x.startswith("| freezed"))
    assert "†" in freezed_row or "—" in freezed_row or "nan" in freezed_row.lower()


# ----------------------------------------------------------------------------- driver killed
def _ray_processes_of(record: Path) -> list[int]:
    from harness.ray_session import start_time

    rec = json.loads(record.read_text())
    return [int(p) for p, t in rec["processes"].items() if t and start_time(int(p)) == t]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_driver_killed_mid_study_resume_finishes_without_rerunning(harness_cache,
                                                                   tiny_artifacts, tmp_path):
    from harness.ray_session import records_dir

    faults = tmp_path / "faults"
    faults.mkdir()
    data = tiny_study(harness_cache, tmp_path / "out",
                      training={"iterations": 6, "eval_every": 2, "checkpoint_every": 2},
                      resources={"max_concurrent_trials": 1})
    path = write_study(tmp_path / "tiny.yaml", data)
    env = {**subprocess_env(), "CAT_FAULT_DIR": str(faults), "CAT_FAULT_STEP_DELAY_S": "0.5"}
    out = tmp_path / "out" / "tiny"
    driver = subprocess.Popen([sys.executable, "-m", "harness.run", str(path)], cwd=REPO,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record = records_dir() / f"{driver.pid}.json"
    deadline = time.monotonic() + 400
    finished: dict[str, bytes] = {}
    while time.monotonic() < deadline and driver.poll() is None:
        done = {t.name: (t / "result.json").read_bytes() for t in out.glob("tune/train_*")
                if any(r.get("done") for r in _rows(t))}
        if done and len(_starts(faults)) >= 2:
            finished = done
            break
        time.sleep(0.2)
    assert finished and driver.poll() is None, "the study ended before the driver was killed"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    left = _ray_processes_of(record)
    assert left                                     # SIGKILL leaves the local Ray running

    proc = subprocess.run([sys.executable, "-m", "harness.run", str(path), "--resume"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=400,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"earlier run whose driver (pid {driver.pid}) was killed" in proc.stdout
    from harness.ray_session import start_time

    assert all(start_time(p) is None for p in left)  # none of the old daemons is left
    starts = Counter(s["trial"] for s in _starts(faults))
    for name, before in finished.items():
        assert starts[name] == 1                     # a finished trial never runs again
        assert (out / "tune" / name / "result.json").read_bytes() == before
    trials_dirs = sorted(out.glob("tune/train_*"))
    assert len(trials_dirs) == 2
    for t in trials_dirs:
        assert _rows(t)[-1]["iteration"] == 6 and _rows(t)[-1]["done"] is True
    final = __import__("pandas").read_csv(out / "analysis" / "results_final.csv")
    by_method = final.set_index("method")["fid"]
    for t in trials_dirs:
        last = _rows(t)[-1]
        assert by_method[last["method"]] == pytest.approx(last["final_fid"])

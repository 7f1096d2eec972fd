"""Faults with real processes and a real local Ray (no mocks of Ray): a trial process killed,
one DDP worker killed, the driver killed mid-study, Ctrl-C mid-study, a non-finite loss in a
trial (corrupt artifacts and checkpoints: tests/harness/test_corrupt_artifacts.py). The test hooks of `harness.faults` (environment variables)
record each trial start's pid, slow the steps down, and hold a trial after a given iteration
until the test kills or interrupts it, so the fault lands between two checkpoints however late
the reports reach Tune on a busy machine.

Time: the module shares one local Ray, one tiny stage cache (conftest's `tiny_artifacts`) and
one experiment per trial path (in-process, 2-worker DDP) that carries both the kill and the NaN
fault; the driver faults are one chain of `python -m harness.run` runs on one YAML.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from harness import trial_failures as failures
from harness import trials
from harness.config import parse_study
from tests.harness.conftest import LABELS, subprocess_env, tiny_study, write_study

REPO = Path(__file__).resolve().parents[2]
DELAY_S = 0.4          # per training step: a 6-iteration trial trains for ~2.4 s
ITERATIONS = 6         # evaluations and checkpoints every 2; the kill lands after the first


# ----------------------------------------------------------------------------- corrupt cache


@pytest.fixture(scope="module")
def fault_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def cluster(fault_dir):
    import ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    env = {"RAY_TRAIN_V2_ENABLED": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "CAT_FAULT_DIR": str(fault_dir), "CAT_FAULT_STEP_DELAY_S": str(DELAY_S),
           "CAT_FAULT_NAN": "freezed@3", "CAT_FAULT_HOLD": "no-cat@2"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": env})
    yield ray.cluster_resources()
    ray.shutdown()


def _records(fault_dir: Path, name: str = "starts.jsonl") -> list[dict]:
    """The lines `harness.faults` appended to `name` (trial starts, or holds)."""
    path = fault_dir / name
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


_starts = _records


def _rows(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def _study(study, methods: tuple[str, ...], **changes):
    data = study.model_dump(mode="json")
    data["methods"] = [m for m in data["methods"] if m["label"] in methods]
    data["training"].update(iterations=ITERATIONS, eval_every=2, checkpoint_every=2)
    for key, value in changes.items():
        data[key] = {**data[key], **value}
    return parse_study(data)


def _kill_when(fault_dir: Path, out: Path, label: str, rank: int | None, min_iteration: int,
               killed: list[dict]) -> threading.Thread:
    """Background killer: SIGKILL the process of `label`'s trial (or its DDP worker `rank`)
    once that trial has reported `min_iteration` (a checkpoint is there)."""
    def run() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            for trial in out.glob(f"tune/train_*_{label}_*"):
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


def _faulty_experiment(cluster, tiny_artifacts, fault_dir, out: Path, rank: int | None,
                       **resources) -> dict:
    """One experiment, two faults, both trials at once: the no-cat trial's process (or its
    DDP worker `rank`) is killed after its checkpoint at iteration 2, the freezed trial's loss
    turns NaN at iteration 3 (CAT_FAULT_NAN). `max_failures=1`: one retry is allowed to
    either."""
    from harness.pipeline import write_resolved

    study, art = tiny_artifacts
    both = _study(study, LABELS, resources={"max_failures": 1, **resources})
    write_resolved(both, out, ["method"], "tiny")
    killed: list[dict] = []
    thread = _kill_when(fault_dir, out, "no-cat", rank, 2, killed)
    lines: list[str] = []
    begin = time.time()
    artifacts = dataclasses.replace(art, study=both)
    grid = trials.run_trials(both, artifacts, out, cluster, False, lines.append)
    thread.join(5)
    assert killed, "the trial finished before it could be killed"
    by_method = {r.config["method"]: r for r in grid}
    starts = {m: [s for s in _starts(fault_dir) if s["trial"] == Path(r.path).name
                  and s["time"] >= begin] for m, r in by_method.items()}
    return {"study": both, "artifacts": artifacts, "grid": grid, "by_method": by_method, "lines": lines,
            "killed": killed, "starts": starts, "out": out}


@pytest.fixture(scope="module")
def in_process_faults(cluster, tiny_artifacts, fault_dir, tmp_path_factory) -> dict:
    return _faulty_experiment(cluster, tiny_artifacts, fault_dir,
                              tmp_path_factory.mktemp("in-process"), None)


@pytest.fixture(scope="module")
def ddp_faults(cluster, tiny_artifacts, fault_dir, tmp_path_factory) -> dict:
    return _faulty_experiment(cluster, tiny_artifacts, fault_dir,
                              tmp_path_factory.mktemp("ddp"), 1, workers_per_trial=2,
                              cpus_per_worker=0.45)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_killed_trial_process_is_retried_from_its_checkpoint(in_process_faults):
    run = in_process_faults
    result = run["by_method"]["no-cat"]
    assert result.error is None and failures.failure_of(result) is None
    rows = _rows(Path(result.path))
    iterations = [r["iteration"] for r in rows]
    assert iterations[-1] == ITERATIONS and rows[-1]["done"] is True
    after = run["killed"][0]["after"]                           # reports before the kill kept
    assert after >= 2 and set(range(2, after + 1, 2)) <= set(iterations)
    redone = [i for i, n in Counter(iterations).items() if n > 1]
    training = run["study"].training
    assert len(redone) <= training.checkpoint_every // training.eval_every
    starts = run["starts"]["no-cat"]
    assert [s["restored"] for s in starts] == [False, True]     # retried once, from a checkpoint
    assert starts[1]["restored_iteration"] >= after             # the last one, not an earlier
    assert starts[0]["pid"] == run["killed"][0]["pid"] != starts[1]["pid"]


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_killed_ddp_worker_restores_from_the_last_checkpoint(ddp_faults):
    result = ddp_faults["by_method"]["no-cat"]
    assert result.error is None, result.error
    rows = _rows(Path(result.path))
    # (Ray Train's reports reach Tune without `done`: train_worker drops it on purpose)
    assert rows[-1]["iteration"] == ITERATIONS and "final_fid" in rows[-1]
    rank1 = [s for s in ddp_faults["starts"]["no-cat"] if s["rank"] == 1]
    assert [s["restored"] for s in rank1] == [False, True]   # the group restarted from one
    after = ddp_faults["killed"][0]["after"]
    assert after >= 2 and set(range(2, after + 1, 2)) <= {r["iteration"] for r in rows}
    # from the last checkpoint before the kill (`after` is read from the driver's result rows,
    # which trail the workers: a later checkpoint may exist), never an earlier one
    assert after <= rank1[1]["restored_iteration"] < ITERATIONS


@pytest.mark.slow
@pytest.mark.parametrize("path", ["in-process", "ddp"])
def test_non_finite_loss_fails_its_trial_once_and_the_table_marks_it(in_process_faults,
                                                                     ddp_faults, path):
    from harness.analysis import analyze_study

    run = in_process_faults if path == "in-process" else ddp_faults
    failed = run["by_method"]["freezed"]
    cause = "NonFiniteLossError: non-finite loss at iteration 3"
    assert failures.failure_of(failed).startswith(cause)
    assert run["grid"].outcome == {"finished": 1, "failed": 1, "interrupted": 0}
    summary = [x for x in run["lines"] if x.startswith("[trials] failed trial")]
    assert len(summary) == 1 and cause in summary[0] and "ray::" not in summary[0]
    assert Path(failed.path).name in summary[0]
    # started exactly once (each rank once): neither Tune nor Ray Train retried it, although
    # max_failures=1 would allow one retry
    ranks = [s["rank"] for s in run["starts"]["freezed"]]
    assert sorted(ranks, key=str) == ([None] if path == "in-process" else [0, 1])
    error_text = (Path(failed.path) / "error.txt").read_text()
    assert error_text.startswith(cause) and "not retried" in error_text
    assert "Traceback" in error_text
    rows = _rows(Path(failed.path))
    assert rows[0]["iteration"] == 2                            # its report before the NaN
    assert rows[-1][failures.FAILURE_KEY].startswith(cause) and math.isnan(rows[-1]["fid"])
    analyze_study(run["out"], log=lambda _: None)
    table = (run["out"] / "analysis" / "tables" / "main.md").read_text()
    freezed_row = next(x for x in table.splitlines() if x.startswith("| freezed"))
    nocat_row = next(x for x in table.splitlines() if x.startswith("| no-cat"))
    assert "†" in freezed_row and "†" not in nocat_row


@pytest.mark.slow
def test_resume_keeps_the_deterministic_failure_without_starting_it(cluster, fault_dir,
                                                                    in_process_faults):
    run = in_process_faults
    lines: list[str] = []
    begin = time.time()
    grid = trials.run_trials(run["study"], run["artifacts"], run["out"], cluster, True,
                             lines.append)
    assert grid.outcome == {"finished": 1, "failed": 1, "interrupted": 0}
    assert [s for s in _starts(fault_dir) if s["time"] >= begin] == []   # nothing ran again
    summary = [x for x in lines if x.startswith("[trials] failed trial")]
    assert len(summary) == 1 and "NonFiniteLossError: non-finite loss at iteration 3" in \
        summary[0]


# ----------------------------------------------------------------------------- the driver
# One YAML for the driver tests, each run in its own output folder (`--output`), all on the
# shared stage cache: 2 trials of 4 iterations, one at a time, so a fault can land after the
# first trial finished and while the second runs.
def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _summary(stdout: str) -> dict:
    """The summary JSON `harness.run` prints last."""
    lines = stdout.splitlines()
    first = max(i for i, line in enumerate(lines) if line == "{")
    last = next(i for i in range(first, len(lines)) if lines[i] == "}")
    return json.loads("\n".join(lines[first:last + 1]))


def _table_rows(out: Path) -> dict[str, str]:
    table = (out / "analysis" / "tables" / "main.md").read_text()
    return {row.split("|")[1].strip(): row for row in table.splitlines()
            if row.startswith("| ") and row.split("|")[1].strip() in LABELS}


def _finished(out: Path) -> dict[str, bytes]:
    return {t.name: (t / "result.json").read_bytes() for t in out.glob("tune/train_*")
            if any(r.get("done") for r in _rows(t))}


def _wait_for(condition, driver: subprocess.Popen, limit_s: float = 300) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and driver.poll() is None:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _run(args: list[str], env: dict, logs: Path, **kwargs) -> subprocess.Popen:
    """`python -m harness.run ARGS` in the background, its output in files (a pipe nobody
    reads while the test waits would fill and block the driver)."""
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "stdout", "w") as stdout, open(logs / "stderr", "w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "harness.run", *args], cwd=REPO,
                                env=env, stdout=stdout, stderr=stderr, **kwargs)


def _output(logs: Path) -> tuple[str, str]:
    return (logs / "stdout").read_text(), (logs / "stderr").read_text()


@pytest.fixture(scope="module")
def driver_study(harness_cache, tiny_artifacts, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("driver")
    data = tiny_study(harness_cache, folder / "out",
                      training={"iterations": 4, "eval_every": 2, "checkpoint_every": 2},
                      resources={"max_concurrent_trials": 1})
    return write_study(folder / "tiny.yaml", data)


@pytest.fixture(scope="module")
def reference_run(cluster, driver_study, tmp_path_factory) -> Path:
    """The same YAML and cache, uninterrupted, on the module's Ray (`--address`), both trials
    at once (`resources` say where a trial runs, not what it computes: they are not part of
    the trials' fingerprint)."""
    import ray

    out = tmp_path_factory.mktemp("reference")
    proc = subprocess.run([sys.executable, "-m", "harness.run", str(driver_study),
                           "--output", str(out), "--address",
                           ray.get_runtime_context().gcs_address,
                           "--set", "resources.max_concurrent_trials=2"],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "tiny"


def _ray_processes_of(record: Path) -> list[int]:
    from harness.ray_session import start_time

    rec = json.loads(record.read_text())
    return [int(p) for p, t in rec["processes"].items() if t and start_time(int(p)) == t]


def _reported(row: dict) -> dict:
    """A result row without the fields Tune fills in itself (times, pid, iteration count)."""
    from ray.tune.result import AUTO_RESULT_KEYS

    return {k: v for k, v in row.items() if k not in AUTO_RESULT_KEYS}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_driver_killed_then_ctrl_c_then_resume_finishes_as_an_uninterrupted_run(
        driver_study, reference_run, tmp_path):
    """One study, three runs (a chain, so that each fault costs one driver start): the driver
    is SIGKILLed when the first trial has finished and the second started; its `--resume` is
    stopped by Ctrl-C while the second trial is midway; the next `--resume` finishes."""
    from harness.ray_session import records_dir, start_time
    from harness.run import resume_command

    faults = tmp_path / "faults"
    faults.mkdir()
    env = {**subprocess_env(), "CAT_FAULT_DIR": str(faults), "CAT_FAULT_STEP_DELAY_S": "1.0"}
    args = [str(driver_study), "--output", str(tmp_path / "out")]
    out = tmp_path / "out" / "tiny"

    # ---- run 1: SIGKILL of the driver mid-study. The trial that runs second holds after
    # iteration 3 (the grid starts LABELS[0] first at one trial at a time; had LABELS[1] run
    # first, it would only wait HOLD_S and go on), so it cannot also finish before the test
    # sees the first one done, however late that trial's final report reaches result.json
    driver = _run(args, {**env, "CAT_FAULT_HOLD": f"{LABELS[1]}@3"}, tmp_path / "killed")
    assert _wait_for(lambda: _finished(out) and len(_starts(faults)) >= 2, driver), \
        "the study ended before the driver was killed"
    finished = _finished(out)
    (done_method,) = {json.loads(b.splitlines()[-1])["method"] for b in finished.values()}
    left = _ray_processes_of(records_dir() / f"{driver.pid}.json")
    agents = {p: _cmdline(p) for p in left
              if "DashboardAgent" in _cmdline(p) or "RuntimeEnvAgent" in _cmdline(p)}
    assert {"ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= {
        c.split()[0] for c in agents.values()}, agents
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert all(start_time(p) is not None for p in agents)   # SIGKILL leaves them running

    # ---- run 2: --resume; Ctrl-C (to its whole process group, as a terminal sends it, Ray's
    # daemons included) while the second trial is midway: it holds after iteration 3, between
    # its checkpoints at 2 and 4 (CAT_FAULT_HOLD; whether it restarted from scratch or from
    # run 1's checkpoint), so the Ctrl-C lands there however busy the machine is
    (other_method,) = set(LABELS) - {done_method}
    resumed = _run([*args, "--resume"], {**env, "CAT_FAULT_HOLD": f"{other_method}@3"},
                   tmp_path / "interrupted", start_new_session=True)
    # once it has started its own Ray (its record is written after ray.init), the killed
    # run's agents are gone
    assert _wait_for(lambda: (records_dir() / f"{resumed.pid}.json").is_file(), resumed)
    assert [p for p in agents if start_time(p) is not None] == []
    (second,) = {s["trial"] for s in _starts(faults) if s["trial"] not in finished}

    held_in_run_1 = len(_records(faults, "holds.jsonl"))

    def second_trial_held() -> bool:   # in this run
        return any(h["trial"] == second
                   for h in _records(faults, "holds.jsonl")[held_in_run_1:])

    assert _wait_for(second_trial_held, resumed), "the study ended before Ctrl-C"
    os.killpg(resumed.pid, signal.SIGINT)
    resumed.wait(timeout=300)
    stdout, stderr = _output(tmp_path / "interrupted")
    text = stdout + stderr
    assert resumed.returncode != 0, text[-3000:]
    assert f"earlier run whose driver (pid {driver.pid}) was killed" in stdout
    assert all(start_time(p) is None for p in left)  # none of the old daemons is left
    summary = _summary(stdout)
    assert (summary["finished_trials"], summary["interrupted_trials"],
            summary["failed_trials"]) == (1, 1, 0), text[-3000:]
    assert "[analysis] partial: 1 of 2 trial(s) were interrupted" in stdout
    rows = _table_rows(out)
    assert "†" not in rows[done_method]
    assert "†" in next(r for m, r in rows.items() if m != done_method)
    hints = [line for line in text.splitlines() if "--resume" in line or "restore(" in line]
    assert len(hints) == 1 and hints[0].endswith(resume_command([*args, "--resume"])), hints
    assert "Tuner.restore(" not in text

    # ---- run 3: --resume finishes
    proc = subprocess.run([sys.executable, "-m", "harness.run", *args, "--resume"], cwd=REPO,
                          env={**env, "CAT_FAULT_STEP_DELAY_S": "0"}, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = _summary(proc.stdout)
    assert (summary["finished_trials"], summary["interrupted_trials"]) == (2, 0)
    starts = Counter(s["trial"] for s in _starts(faults))
    for name, result in finished.items():
        assert starts[name] == 1                     # a finished trial never trains again
        # its reports are kept; if Tune had not yet recorded it as finished when the driver
        # died, the start on resume sent its kept final report again (harness.trial.FinalReport)
        now = (out / "tune" / name / "result.json").read_bytes()
        assert now.startswith(result)
        final = _reported(json.loads(result.splitlines()[-1]))
        assert all(_reported(json.loads(r)) == final for r in now[len(result):].splitlines())
    for t in out.glob("tune/train_*"):
        assert _rows(t)[-1]["iteration"] == 4 and _rows(t)[-1]["done"] is True
    # the trial that had finished before the kill: its table row is an uninterrupted run's,
    # and so are its final numbers
    assert _table_rows(out)[done_method] == _table_rows(reference_run)[done_method]
    import pandas as pd

    final = pd.read_csv(out / "analysis" / "results_final.csv").set_index("method")
    ref = pd.read_csv(reference_run / "analysis" / "results_final.csv").set_index("method")
    for metric in ("fid", "kid", "miou"):
        assert final.loc[done_method, metric] == pytest.approx(ref.loc[done_method, metric])

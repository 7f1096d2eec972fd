"""A tiny study through `python -m harness.run`: local Ray, cached stages, Tune trials, analysis;
then a second run (every stage from the cache, finished trials reused) and `--resume` on the
finished experiment (no trial reruns)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.harness.conftest import LABELS, subprocess_env, tiny_study, write_study

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
MODEL_STAGES = ("dataset-source", "dataset-target", "subsets", "source-model",
                "segmenter-target", "real statistics")


def run_harness(*args: str, timeout: int = 280) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "harness.run", *args], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def summary_of(stdout: str) -> dict:
    """The JSON summary `harness.run` prints last."""
    start = stdout.rindex('{\n "study"')
    return json.JSONDecoder().raw_decode(stdout[start:])[0]


def stage_states(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"^\[stage\] ([\w -]+?): (building|cached)\b", stdout, re.MULTILINE))


def result_rows(trial: Path) -> list[dict]:
    return [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    study = write_study(tmp / "tiny.yaml", tiny_study(tmp / "cache", tmp / "out"))
    return study, tmp / "out" / "tiny", run_harness(str(study))


def test_study_runs_trials_and_analysis(first_run):
    _, out, proc = first_run
    states = stage_states(proc.stdout)
    assert {states[s] for s in ("dataset-source", "source-model", "segmenter-target")} \
        == {"building"}
    assert "[ray] dashboard: http://127.0.0.1:" in proc.stdout
    summary = summary_of(proc.stdout)
    assert (summary["trials"], summary["failed_trials"]) == (2, 0)
    assert summary["output_dir"] == str(out)

    trials = sorted((out / "tune").glob("train_*"))
    assert [t.name.split("_", 2)[2] for t in trials] == [f"{m}_s20_seed0" for m in LABELS]
    for trial, label in zip(trials, LABELS, strict=True):
        params = json.loads((trial / "params.json").read_text())
        assert params == {"method": label, "target_size": 20, "seed": 0}
        rows = result_rows(trial)
        assert [r["iteration"] for r in rows] == [2, 4]
        assert rows[-1]["method"] == label and rows[-1]["final_fid"] == rows[-1]["fid"]
        assert (trial / "samples" / "final.png").is_file()

    resolved = (out / "study.yaml").read_text()
    assert "axes:\n- method\n" in resolved
    analysis = out / "analysis"
    main_table = (analysis / "tables" / "main.md").read_text()
    assert all(label in main_table for label in LABELS)
    final = pd.read_csv(analysis / "results_final.csv")
    assert sorted(final["method"]) == sorted(LABELS)
    by_method = final.set_index("method")["fid"]
    for trial, label in zip(trials, LABELS, strict=True):
        assert by_method[label] == pytest.approx(result_rows(trial)[-1]["final_fid"])
    assert (analysis / "report.html").is_file()
    assert summary["outputs"]["tables"]["main"]["md"] == str(analysis / "tables" / "main.md")


def _results(out: Path) -> dict[str, bytes]:
    return {t.name: (t / "result.json").read_bytes() for t in (out / "tune").glob("train_*")}


def test_rerun_takes_every_stage_from_the_cache(first_run):
    study, out, _ = first_run
    before = _results(out)
    proc = run_harness(str(study))
    plan = dict(re.findall(r"^\[plan\]\s+stage (\S+)\s+(will run|cached)\s*$", proc.stdout,
                           re.MULTILINE))
    assert {k: v for k, v in plan.items() if k not in ("trials", "analysis")} == dict.fromkeys(
        ("dataset-source", "dataset-target", "subsets", "source-model", "segmenter-target",
         "real-statistics"), "cached")
    assert stage_states(proc.stdout) == dict.fromkeys(MODEL_STAGES, "cached")
    assert "building" not in proc.stdout
    # the same study on the same artifacts: the finished trials are reused, not rerun
    assert "[stage] trials: the experiment at" in proc.stdout
    assert _results(out) == before
    assert summary_of(proc.stdout)["trials"] == 2


def test_resume_reruns_no_finished_trial(first_run):
    study, out, _ = first_run
    before = _results(out)
    proc = run_harness(str(study), "--resume")
    assert "[trials] resuming" in proc.stdout
    assert _results(out) == before
    assert len(before) == 2 and all(v.count(b"\n") == 2 for v in before.values())
    assert summary_of(proc.stdout)["trials"] == 2

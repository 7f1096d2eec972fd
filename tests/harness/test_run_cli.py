"""`python -m harness.run`: --dry-run plans without running; bad studies exit 2 with one message
naming the file and the field; --set and --output reach the study."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import StudyError, parse_study
from harness.pipeline import check_fits
from harness.run import main
from tests.harness.conftest import merge, subprocess_env, tiny_study, write_study

REPO = Path(__file__).resolve().parents[2]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _plan_stages(text: str) -> dict[str, str]:
    return dict(re.findall(r"^\[plan\]\s+stage (\S+)\s+(will run|cached)\s*$", text, re.MULTILINE))


def test_dry_run_subprocess_prints_plan_and_runs_nothing(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    path = write_study(tmp_path / "tiny.yaml", tiny_study(cache, out))
    proc = subprocess.run(
        [sys.executable, "-m", "harness.run", str(path), "--dry-run",
         "--set", "seeds=[0, 1]", "--set", "training.iterations=6"],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120,
        check=False)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert _plan_stages(text) == {
        "dataset-source": "will run", "dataset-target": "will run", "subsets": "will run",
        "source-model": "will run", "segmenter-target": "will run",
        "real-statistics": "will run", "trials": "will run", "analysis": "will run"}
    # 2 methods x 1 size x 2 seeds (from --set); the size is fixed, so not an axis
    assert "[plan] trials: grid of 4 over ['method', 'seed']" in text
    assert "[plan]   method: {'grid_search': ['no-cat', 'freezed']}" in text
    assert "[plan]   seed: {'grid_search': [0, 1]}" in text
    assert "[plan]   target_size: 20" in text
    assert "    iterations: 6" in text                          # the resolved study
    assert re.search(r"resources per trial: 1 worker\(s\) × 1(\.0)? CPU, 0(\.0)? GPU", text)
    assert f"[plan] outputs: {out / 'tiny'}" in text
    assert not (out / "tiny").exists()                         # nothing written, nothing run
    assert not (cache / "stages").exists()


def test_dry_run_in_process_honours_output_and_sets(tmp_path, capsys):
    path = write_study(tmp_path / "tiny.yaml", tiny_study(tmp_path / "cache", tmp_path / "out"))
    code = main([str(path), "--dry-run", "--output", str(tmp_path / "elsewhere"),
                 "--set", "target_sizes=[10, 20]", "--set", "name=renamed"])
    text = capsys.readouterr().out
    assert code == 0
    assert f"[plan] outputs: {tmp_path / 'elsewhere' / 'renamed'}" in text
    assert "[plan] study 'renamed'" in text
    assert "grid of 4 over ['method', 'target_size']" in text
    assert not (tmp_path / "elsewhere").exists()


BAD_STUDIES = [
    pytest.param({"trainig": {"iterations": 4}}, "trainig", "Extra inputs are not permitted",
                 id="unknown-key"),
    pytest.param({"evaluation": {"n_samples": "many"}}, "evaluation.n_samples",
                 "valid integer", id="wrong-type"),
    pytest.param({"training": {"eval_every": 2, "checkpoint_every": 3}}, "training",
                 "checkpoint_every (3) must be a multiple of eval_every (2)",
                 id="checkpoint-not-multiple-of-eval"),
    pytest.param({"methods": [{"baseline": "stylegan"}]}, "methods.0.baseline",
                 "unknown method 'stylegan'", id="unknown-method"),
    pytest.param({"methods": [{"affinity": "vibes"}]}, "methods.0.affinity",
                 "unknown affinity 'vibes'", id="unknown-affinity"),
]


@pytest.mark.parametrize("change, field, message", BAD_STUDIES)
def test_bad_study_exits_2_naming_file_and_field(tmp_path, capsys, change, field, message):
    data = merge(tiny_study(tmp_path / "cache", tmp_path / "out"), change)
    path = write_study(tmp_path / "bad.yaml", data)
    code = main([str(path), "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0, err                     # one message
    assert err.startswith(f"error: {path}: {field}: "), err
    assert message in err


def test_bad_override_exits_2(tmp_path, capsys):
    path = write_study(tmp_path / "tiny.yaml", tiny_study(tmp_path / "cache", tmp_path / "out"))
    assert main([str(path), "--dry-run", "--set", "training.iterations=abc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: training.iterations: ") and "'abc'" in err


def test_target_size_larger_than_pool_exits_2_before_ray(tmp_path, capsys):
    out = tmp_path / "out"
    path = write_study(tmp_path / "big.yaml",
                       tiny_study(tmp_path / "cache", out, target_sizes=[20, 500]))
    code = main([str(path)])
    errors = _error_lines(capsys.readouterr().err)    # progress bars share stderr
    assert code == 2
    assert len(errors) == 1
    assert errors[0].startswith(f"error: {path}: target_sizes: [500] exceed the 60 images")
    assert not (out / "tiny" / "tune").exists()


def test_bad_study_subprocess_exit_code(tmp_path):
    data = merge(tiny_study(tmp_path / "cache", tmp_path / "out"),
                 {"resources": {"workers_per_trial": 0}})
    path = write_study(tmp_path / "bad.yaml", data)
    proc = subprocess.run([sys.executable, "-m", "harness.run", str(path)], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2
    assert _error_lines(proc.stderr) == [
        f"error: {path}: resources.workers_per_trial: Input should be greater than 0 (got 0)"]
    assert proc.stdout == "" and not (tmp_path / "out").exists()


def test_trial_larger_than_cluster_names_the_field(tmp_path):
    data = tiny_study(tmp_path / "cache", tmp_path / "out",
                      resources={"workers_per_trial": 2, "cpus_per_worker": 1})
    study = parse_study(data, "tiny.yaml")
    with pytest.raises(StudyError, match=r"^tiny\.yaml: resources\.workers_per_trial: one "
                                         r"trial needs 2\.01 CPUs \(2 workers × 1\) but the "
                                         r"cluster has 2$"):
        check_fits(study, {"CPU": 2.0}, "tiny.yaml")
    check_fits(study, {"CPU": 3.0}, "tiny.yaml")
    gpus = parse_study(merge(data, {"resources": {"gpus_per_worker": 1}}), "tiny.yaml")
    with pytest.raises(StudyError, match=r"^tiny\.yaml: resources: one trial needs 2 GPU"):
        check_fits(gpus, {"CPU": 8.0, "GPU": 1.0}, "tiny.yaml")

"""Loading a study folder into the steps / final DataFrames, including broken and partial ones."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.analysis import ResultsError, final_view, load_studies, load_study, save_results
from harness.analysis.load import read_result_lines
from tests.analysis.conftest import (
    FID_BASE,
    FID_SPREAD,
    METHODS,
    MIOU_BASE,
    SEEDS,
    SIZES,
    interrupt_trial,
    trial_dir_of,
    write_study,
)


def test_steps_and_final_views_hold_every_trial_and_report(study_dir):
    results = load_study(study_dir)
    n_trials = len(METHODS) * len(SIZES) * len(SEEDS)
    assert len(results.final) == n_trials
    assert len(results.steps) == 3 * n_trials  # two evaluations + the final report each
    assert results.axes == ["method", "target_size", "seed"]
    assert results.method_order == list(METHODS)
    assert set(results.final["status"]) == {"complete"}
    assert set(results.final["pair"]) == {"COCO→ADE"}
    row = results.final.set_index(["method", "target_size", "seed"]).loc[("freezed", 100, 2)]
    assert row["fid"] == pytest.approx(FID_BASE["freezed"][100] + FID_SPREAD)
    assert row["miou"] == pytest.approx(MIOU_BASE["freezed"][100] + 0.01)
    assert row["iteration"] == 300 and row["n_evals"] == 3
    # provenance and the method's options (from study.yaml, not in params.json) are columns
    assert row["fid_feature_net"] == "inception-test" and row["source_ckpt_hash"] == "abc123"
    assert not row["two_stage"] and row["freeze_d"] == 3 and row["baseline"] == "freezed"
    assert row["lr_g"] == pytest.approx(1e-4)


def test_final_view_prefers_final_metric_and_falls_back_to_last_evaluation():
    steps = pd.DataFrame({
        "trial_dir": ["a", "a", "b", "b"], "iteration": [100, 200, 100, 200],
        "fid": [50.0, 45.0, 70.0, 65.0], "final_fid": [None, 44.0, None, None],
        "miou": [0.1, 0.2, 0.3, None]})
    final = final_view(steps).set_index("trial_dir")
    assert final.loc["a", "fid"] == 44.0          # the end-of-training evaluation wins
    assert final.loc["b", "fid"] == 65.0          # unfinished: the last evaluated value
    assert final.loc["b", "miou"] == 0.3          # last *non-missing* value
    assert final.loc["a", "n_evals"] == 2
    assert "miou_segmenter" in final and final["miou_segmenter"].isna().all()


def test_torn_last_line_is_dropped_and_the_trial_is_interrupted(study_dir):
    trial = trial_dir_of(study_dir, "cat-random", 25, 1)
    interrupt_trial(trial, keep=2, torn=True)
    assert len(read_result_lines(trial / "result.json")) == 2
    results = load_study(study_dir)
    row = results.final[results.final["trial_dir"] == f"tune/{trial.name}"].iloc[0]
    assert row["status"] == "interrupted"
    assert row["iteration"] == 200
    assert row["fid"] == pytest.approx(FID_BASE["cat-random"][25] + 10)  # its last evaluation
    assert pd.isna(row["final_fid"])
    assert len(results.final) == 18


def test_corrupt_line_before_the_last_raises_with_file_and_line(study_dir):
    path = trial_dir_of(study_dir, "freezed", 25, 0) / "result.json"
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:20]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ResultsError, match=r"result\.json: line 2: not valid JSON"):
        load_study(study_dir)


def test_pending_and_errored_trials_are_kept_with_their_status(study_dir):
    pending = trial_dir_of(study_dir, "freezed", 25, 0)
    (pending / "result.json").unlink()
    failed = trial_dir_of(study_dir, "freezed", 25, 1)
    interrupt_trial(failed, keep=1, torn=False)
    (failed / "error.txt").write_text("RuntimeError: boom")
    final = load_study(study_dir).final.set_index("trial_dir")
    assert final.loc[f"tune/{pending.name}", "status"] == "pending"
    assert pd.isna(final.loc[f"tune/{pending.name}", "fid"])
    assert final.loc[f"tune/{failed.name}", "status"] == "error"


def test_tune_state_marks_scheduler_stopped_trials(study_dir):
    trial = trial_dir_of(study_dir, "cat-random", 100, 0)
    interrupt_trial(trial, keep=2, torn=False)
    state = {"trial_data": [[json.dumps({"relative_logdir": trial.name,
                                         "status": "TERMINATED"}), "{}"]]}
    (study_dir / "tune" / "experiment_state-2026-01-01.json").write_text(json.dumps(state))
    final = load_study(study_dir).final.set_index("trial_dir")
    assert final.loc[f"tune/{trial.name}", "status"] == "stopped"


def test_a_folder_without_trials_is_a_clear_error(tmp_path):
    with pytest.raises(ResultsError, match="no trial folders"):
        load_study(tmp_path)
    with pytest.raises(ResultsError, match="study folder not found"):
        load_study(tmp_path / "missing")
    (tmp_path / "study.yaml").write_text("axes: method\n")
    with pytest.raises(ResultsError, match="axes: expected a list"):
        load_study(tmp_path)


def test_a_folder_of_studies_is_not_taken_for_one(tmp_path):
    write_study(tmp_path, "coco2ade")
    write_study(tmp_path, "ade2coco")
    with pytest.raises(ResultsError, match=r"not a study folder, but it holds studies "
                                           r"\(ade2coco, coco2ade\); pass those folders"):
        load_study(tmp_path)


def test_without_study_yaml_the_axes_are_inferred(study_dir):
    (study_dir / "study.yaml").unlink()
    results = load_study(study_dir)
    assert results.axes == ["method", "target_size", "seed"]  # lr_g does not vary
    assert results.method_order == list(METHODS)


def test_several_studies_make_the_pair_an_axis(tmp_path):
    a = write_study(tmp_path, "coco2ade")
    b = write_study(tmp_path, "ade2coco", source="ade20k", target="coco_stuff", fid_offset=5.0)
    results = load_studies([a, b])
    assert results.axes == ["method", "target_size", "seed", "pair"]
    assert len(results.final) == 36 and results.final["trial_dir"].is_unique
    means = results.final.groupby("pair")["fid"].mean()
    assert means["ADE→COCO"] - means["COCO→ADE"] == pytest.approx(5.0)


def test_saved_parquet_and_csv_hold_the_same_rows(study_dir, tmp_path):
    results = load_study(study_dir)
    paths = save_results(results, tmp_path / "out")
    parquet = pd.read_parquet(paths["final_parquet"])
    csv = pd.read_csv(paths["final_csv"])
    assert len(parquet) == len(csv) == 18
    assert parquet["fid"].tolist() == pytest.approx(csv["fid"].tolist())
    assert len(pd.read_parquet(paths["steps_parquet"])) == 54
    csv_only = save_results(results, tmp_path / "csv_only", parquet=False)
    assert sorted(csv_only) == ["final_csv", "steps_csv"]
    assert not list((tmp_path / "csv_only").glob("*.parquet"))


def test_tune_bookkeeping_is_dropped_and_nested_values_become_text(study_dir, tmp_path):
    trial = trial_dir_of(study_dir, "freezed", 25, 0)
    rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
    for row in rows:
        row.update({"config": {"method": "freezed"}, "date": "2026-01-01", "pid": 7,
                    "trial_id": "1a2b_00000", "extra": {"stage": 2}})
    (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = json.loads((trial / "params.json").read_text())
    (trial / "params.json").write_text(json.dumps({**params, "lr_g": "auto", "crop": [64, 64]}))
    results = load_study(study_dir)
    assert not {"config", "date", "pid"} & set(results.steps.columns)
    row = results.final.set_index("trial_dir").loc[f"tune/{trial.name}"]
    assert row["trial_id"] == "1a2b_00000" and json.loads(row["extra"]) == {"stage": 2}
    assert json.loads(row["crop"]) == [64, 64]
    plain = trial_dir_of(study_dir, "freezed", 25, 1).name  # no trial_id reported
    assert results.final.set_index("trial_dir").loc[f"tune/{plain}", "trial_id"] == plain
    saved = pd.read_parquet(save_results(results, tmp_path / "out")["final_parquet"])
    assert sorted(saved["lr_g"].unique()) == ["0.0001", "auto"]  # one type per column

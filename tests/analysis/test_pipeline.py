"""`analyze_study` / `python -m harness.analyze` end to end: files written, report contents, CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis import analyze_study, load_studies, study_figures
from harness.analyze import main
from tests.analysis.conftest import METHODS, interrupt_trial, trial_dir_of, write_study


def test_every_output_is_written_under_the_analysis_folder(analyzed):
    study, out = analyzed
    assert out.out_dir == study / "analysis"
    assert sorted(out.data) == ["final_csv", "final_parquet", "steps_csv", "steps_parquet"]
    assert len(pd.read_parquet(out.data["final_parquet"])) == 18
    assert sorted(out.tables) == ["main", "training"]
    assert {fmt: p.name for fmt, p in out.tables["main"].items()} == {
        "md": "main.md", "tex": "main.tex", "csv": "main.csv"}
    assert "**60.0 ± 2.0**" in out.tables["main"]["md"].read_text()
    assert sorted(out.figures) == ["affinity_combination", "iterations_coco-to-ade",
                                   "size_coco-to-ade"]
    for path in [*out.figures.values(), *(p for t in out.tables.values() for p in t.values()),
                 out.samples, out.report]:
        assert path.is_file() and path.is_relative_to(out.out_dir)
    # the standalone figure pages share one local plotly.js, not one copy each or a CDN
    assert list(out.out_dir.rglob("plotly.min.js")) == [out.out_dir / "plotly.min.js"]
    for page in out.figures.values():
        assert '<script charset="utf-8" src="../plotly.min.js"></script>' in page.read_text()


def test_report_embeds_tables_figures_and_samples(analyzed):
    _, out = analyzed
    page = out.report.read_text()
    assert "<b>60.0 ± 2.0</b>" in page and "<th>↓FID</th>" in page
    assert "<td>✓</td>" in page and "<td>✗</td>" in page
    assert page.count("class=\"plotly-graph-div\"") == 3      # size, iteration, heatmap
    assert "metrics vs target-set size" in page and "top-3 per target" in page
    assert page.count("src='data:image/png;base64,") == len(METHODS)
    # self-contained: no script or image fetched from elsewhere
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"<(img|link|iframe)[^>]+(src|href)=['\"]https?:", page)
    assert page.count("<script") == 1 + 3  # inlined plotly.js once + one call per figure
    assert "Plotly.newPlot" in page and "plotly.min.js" not in page
    assert "inception-test" in page and "complete: 18" in page
    # the study names no search.metric: FID ranked, and the report says so
    assert "fid (search.metric of coco2ade)" in page
    assert "href='tables/main.tex'" in page


def test_report_states_missing_chromium_once(analyzed):
    _, out = analyzed
    from cat_models.plotting import find_chromium

    if find_chromium() is None:
        assert out.images == []
        assert [n for n in out.notices if "PNG/SVG" in n] == [out.notices[0]]
        assert out.report.read_text().count("PNG/SVG figures skipped") == 1
    else:   # what is reported as written exists; anything kaleido skipped has its notice
        assert all(p.stat().st_size > 0 for p in out.images)
        if {p.suffix for p in out.images} != {".png", ".svg"}:
            assert any("kaleido wrote" in n for n in out.notices)


def test_interrupted_study_is_analysed_with_marked_cells(study_dir):
    interrupt_trial(trial_dir_of(study_dir, "cat-random", 25, 2), keep=1)
    (trial_dir_of(study_dir, "freezed", 100, 1) / "result.json").unlink()  # never started
    out = analyze_study(study_dir, formats=("md",), image_formats=(), log=None)
    assert list(out.tables["main"]) == ["md"]
    assert not (out.out_dir / "tables" / "main.tex").exists()
    text = out.tables["main"]["md"].read_text()
    assert "†" in text and "includes unfinished trials" in text
    final = pd.read_csv(out.data["final_csv"])
    assert sorted(final["status"].value_counts().items()) == [
        ("complete", 16), ("interrupted", 1), ("pending", 1)]


def test_training_free_study_skips_iteration_curves(tmp_path):
    study = write_study(tmp_path, training_free=True)
    out = analyze_study(study, image_formats=(), log=None)
    assert "iterations_coco-to-ade" not in out.figures  # one evaluation, at iteration 0
    assert "size_coco-to-ade" in out.figures
    assert "↓# iters" not in out.tables["training"]["md"].read_text()


def test_training_free_and_finetuned_trials_get_separate_curves(tmp_path):
    tuned = write_study(tmp_path, "finetuned")
    free = write_study(tmp_path, "free", training_free=True, fid_offset=20.0)
    _, fig = study_figures(load_studies([tuned, free]))["size_coco-to-ade"]
    lines = {t.name: list(t.y) for t in fig.data if t.xaxis == "x" and t.mode != "lines"}
    assert lines["cat-combination"] == pytest.approx([60.0, 40.0])
    assert lines["cat-combination (training-free)"] == pytest.approx([80.0, 60.0])
    assert len(lines) == 6


def test_cli_prints_where_outputs_went(study_dir, capsys):
    assert main([str(study_dir), "--format", "md,csv", "--no-images"]) == 0
    printed = capsys.readouterr().out
    assert f"[analysis] report: {study_dir / 'analysis' / 'report.html'}" in printed
    assert "[analysis] table main: tables/main.md, tables/main.csv" in printed
    assert (study_dir / "analysis" / "tables" / "main.csv").is_file()
    assert not (study_dir / "analysis" / "tables" / "main.tex").exists()


def test_cli_several_studies_need_an_output_folder(tmp_path, capsys):
    a = write_study(tmp_path, "coco2ade")
    b = write_study(tmp_path, "ade2coco", source="ade20k", target="coco_stuff")
    assert main([str(a), str(b)]) == 2
    assert "needs an output folder (--output)" in capsys.readouterr().err
    assert main([str(a), str(b), "--output", str(tmp_path / "t1"), "--no-images"]) == 0
    assert "ADE→COCO · 100 images" in (tmp_path / "t1" / "tables" / "main.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--format", "md,docx"], "--format: unknown ['docx']"),
    ([], "no trial folders (with params.json) found"),
])
def test_cli_errors_exit_2_with_a_message(tmp_path, capsys, args, message):
    assert main([str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_module_entry_point_rejects_a_non_study_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness.analyze", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, check=False,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 2
    assert f"error: {tmp_path}: no trial folders" in proc.stderr
    assert proc.stdout == ""


def _with_class_iou(study: Path) -> None:
    """Add per-class IoU keys to every report of the synthetic study: class `sea` at 0.8 for
    CAT (combination) and 0.2 + 0.05 × seed for the others; `lawn` NaN (no pixel of it)."""
    import json

    for trial in (study / "tune").iterdir():
        params = json.loads((trial / "params.json").read_text())
        sea = 0.8 if params["method"] == "cat-combination" else 0.2 + 0.05 * params["seed"]
        rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
        for row in rows:
            row.update({"iou/sea": sea, "iou/lawn": float("nan"), "iou/street": 0.5,
                        "iou_real/sea": 0.9, "iou_real/lawn": 0.7, "iou_real/street": 0.6})
        (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_per_class_iou_table_and_heatmap(tmp_path, analyzed):
    """Trials that report `iou/<class>` get a per-class table (mean ± std over seeds, in %) and
    a heatmap with the real images' row; a study without them gets neither."""
    study = write_study(tmp_path)
    _with_class_iou(study)
    out = analyze_study(study, image_formats=(), log=None)
    assert sorted(out.tables) == ["main", "per_class", "training"]
    table = out.tables["per_class"]["md"].read_text()
    header = next(line for line in table.splitlines() if "sea" in line)
    assert "↑sea" in header and "↑street" in header and "lawn" not in header  # all-NaN: out
    assert "**80.0 ± 0.0**" in table and "25.0 ± 5.0" in table
    _, fig = study_figures(load_studies([study]))["class_iou_coco-to-ade"]
    first = fig.data[0]                                      # 25 target images
    assert list(first.x) == ["sea", "lawn", "street"]
    assert list(first.y) == ["cat-combination (n=3)", "cat-random (n=3)", "freezed (n=3)",
                             "real images"]
    assert first.z[0][0] == pytest.approx(80.0) and first.z[1][0] == pytest.approx(25.0)
    assert first.z[3] == pytest.approx([90.0, 70.0, 60.0])
    assert "class_iou_coco-to-ade" in out.figures
    _, plain = analyzed
    assert "per_class" not in plain.tables
    assert not any(name.startswith("class_iou") for name in plain.figures)

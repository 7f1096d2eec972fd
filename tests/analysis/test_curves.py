"""Curves read back from the plotly figure objects: points, ±std bands, axes, image export."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.analysis import curves, load_study
from harness.analysis.curves import (
    export_images,
    iteration_curves_figure,
    size_curve_points,
    size_curves_figure,
)
from tests.analysis.conftest import FID_BASE, METHODS, MIOU_BASE, write_study


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return load_study(write_study(tmp_path_factory.mktemp("curves")))


def _trace(fig, name: str, panel: int, band: bool = False):
    axis = "x" if panel == 1 else f"x{panel}"
    wanted = f"{name} ±std" if band else name
    (found,) = [t for t in fig.data if t.name == wanted and t.xaxis == axis]
    return found


def test_size_points_are_mean_std_n_per_method_and_size(results):
    points = size_curve_points(results.final, "miou").set_index(["method", "target_size"])
    assert points.loc[("freezed", 100), "mean"] == pytest.approx(25.9)
    assert points.loc[("freezed", 100), "std"] == pytest.approx(1.0)
    assert points.loc[("freezed", 100), "n"] == 3


def test_size_curves_plot_each_method_on_a_log_axis_with_std_bands(results):
    fig = size_curves_figure(results.final, order=list(METHODS))
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["↓FID", "↑mIoU", "↓# iters"]            # paper Fig. 4 panels
    for panel in (1, 2, 3):
        axis = fig.layout["xaxis" if panel == 1 else f"xaxis{panel}"]
        assert axis.type == "log" and list(axis.tickvals) == [25, 100]
    for method in METHODS:
        line = _trace(fig, method, 1)
        assert list(line.x) == [25.0, 100.0]
        assert list(line.y) == pytest.approx([FID_BASE[method][25], FID_BASE[method][100]])
        miou = _trace(fig, method, 2)
        assert list(miou.y) == pytest.approx([100 * MIOU_BASE[method][s] for s in (25, 100)])
    band = _trace(fig, "cat-random", 1, band=True)
    assert band.fill == "toself"
    # upper edge left to right, then lower edge right to left: mean ± 2.0
    assert list(band.x) == [25.0, 100.0, 100.0, 25.0]
    assert list(band.y) == pytest.approx([92.0, 57.0, 53.0, 88.0])
    assert list(_trace(fig, "freezed", 3).y) == pytest.approx([610.0, 610.0])
    # one legend entry per method, in the declared order
    assert [t.name for t in fig.data if t.showlegend] == list(METHODS)


def test_size_curves_draw_the_floor_and_the_real_images_miou_in_their_panels(results):
    plain = size_curves_figure(results.final)
    assert not plain.layout.shapes             # the rows carry no reference: nothing drawn
    final = results.final.assign(fid_floor=117.0, miou_real=0.815)
    fig = size_curves_figure(final)
    lines = {(s.yref, round(s.y0, 3)) for s in fig.layout.shapes if s.line.dash == "dash"}
    assert lines == {("y", 117.0), ("y2", 81.5)}   # FID panel, mIoU panel (×100)
    labels = {a.text for a in fig.layout.annotations}
    assert {"FID floor", "mIoU real"} <= labels
    # rows of two sample counts have two floors: no single line to draw
    mixed = final.assign(fid_floor=[117.0, 95.0] * (len(final) // 2) + [117.0] * (len(final) % 2))
    assert {s.yref for s in size_curves_figure(mixed).layout.shapes} == {"y2"}


def test_iteration_curves_have_one_line_per_trial_and_metric(results):
    fig = iteration_curves_figure(results.steps, results.axes, order=list(METHODS))
    assert len(fig.data) == 18 * 2
    (trial,) = [t for t in fig.data
                if t.meta.endswith("freezed_s100_seed2") and t.xaxis == "x"]
    assert list(trial.x) == [100, 200, 300]
    assert list(trial.y) == pytest.approx([98.0, 78.0, 68.0])   # 68 = 66 + 2 (seed 2)
    (miou,) = [t for t in fig.data if t.meta == trial.meta and t.xaxis == "x2"]
    assert list(miou.y) == pytest.approx([21.9, 24.9, 26.9])
    assert sum(bool(t.showlegend) for t in fig.data) == 3


def test_no_chromium_gives_one_notice_and_no_files(monkeypatch, tmp_path, capsys, results):
    from cat_models import plotting

    monkeypatch.setattr(plotting, "find_chromium", lambda: None)
    monkeypatch.setattr(curves, "_notice_given", False)
    fig = size_curves_figure(results.final)
    first = export_images({tmp_path / "a": fig})
    second = export_images({tmp_path / "b": fig})
    assert first[0] == [] and second[0] == []
    assert "no Chrome/Chromium found" in first[1] and first[1] == second[1]
    assert capsys.readouterr().err.count("PNG/SVG figures skipped") == 1
    assert not list(tmp_path.iterdir())


def test_a_kaleido_failure_becomes_the_notice(monkeypatch, tmp_path, results):
    import plotly.io as pio

    def fail(*_args, **_kwargs):
        raise RuntimeError("browser crashed")

    monkeypatch.setattr(pio, "write_images", fail)
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setattr(curves, "_notice_given", True)
    written, notice = export_images({tmp_path / "a": size_curves_figure(results.final)},
                                    chromium="/usr/bin/true")
    assert written == [] and "kaleido failed: browser crashed" in notice
    assert "BROWSER_PATH" not in os.environ  # the browser path is not left behind


def test_a_file_kaleido_did_not_write_is_not_reported_as_written(monkeypatch, tmp_path,
                                                                 results, capsys):
    import plotly.io as pio

    def skip_svgs(figs, paths, **_kwargs):   # returns without error, writes only the PNGs
        for path in paths:
            if Path(path).suffix == ".png":
                Path(path).write_bytes(b"png")

    monkeypatch.setattr(pio, "write_images", skip_svgs)
    written, notice = export_images({tmp_path / "a": size_curves_figure(results.final)},
                                    chromium="/usr/bin/true")
    assert written == [tmp_path / "a.png"]
    assert "kaleido wrote 1 of 2 files, not a.svg" in notice
    assert "not a.svg" in capsys.readouterr().err

"""Heatmaps: HTML always; PNG only with a Chromium, otherwise one clear notice."""

from __future__ import annotations

import numpy as np
import pytest

from cat_models.affinity import AffinityMatrix
from cat_models.affinity import plot as plot_module
from cat_models.affinity.plot import find_chromium, heatmap_figure, save_heatmap


def _matrix() -> AffinityMatrix:
    return AffinityMatrix(np.array([[0.9, 0.2], [0.1, 0.8]]), ["sky", "grass"],
                          ["sea", "lawn"], "text")


def test_heatmap_axes_follow_the_matrix():
    fig = heatmap_figure(_matrix())
    trace = fig.data[0]
    assert list(trace.x) == ["sea", "lawn"] and list(trace.y) == ["sky", "grass"]
    np.testing.assert_array_equal(np.asarray(trace.z), _matrix().values)
    assert "text affinity (2×2)" in fig.layout.title.text


def test_without_chromium_html_only_and_one_notice(tmp_path, monkeypatch):
    monkeypatch.setattr(plot_module, "find_chromium", lambda: None)
    monkeypatch.setattr(plot_module, "_png_notice_given", False)
    with pytest.warns(UserWarning, match="no Chrome/Chromium found"):
        written = save_heatmap(_matrix(), tmp_path / "A.npy")
    assert set(written) == {"html"} and not (tmp_path / "A.png").exists()
    html = written["html"].read_text()
    assert "plotly" in html.lower() and "lawn" in html
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the notice is given once per process
        save_heatmap(_matrix(), tmp_path / "B")


def test_find_chromium_honours_browser_path(tmp_path, monkeypatch):
    fake = tmp_path / "chromium"
    fake.write_text("")
    monkeypatch.setenv("BROWSER_PATH", str(fake))
    assert find_chromium() == str(fake)
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "missing"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_chromium() is None


def test_a_kaleido_failure_leaves_the_html_and_names_the_png(tmp_path, monkeypatch):
    """kaleido can raise from its browser tab (a JavascriptError on a loaded machine)."""
    import plotly.io as pio

    def broken(figs, paths, **kwargs):
        raise RuntimeError("kaleido_scopes is not defined")

    monkeypatch.setattr(plot_module, "find_chromium", lambda: str(tmp_path / "chromium"))
    monkeypatch.setattr(pio, "write_images", broken)
    with pytest.warns(UserWarning, match=r"C\.png not written: kaleido failed"):
        written = save_heatmap(_matrix(), tmp_path / "C")
    assert set(written) == {"html"} and written["html"].is_file()
    assert not (tmp_path / "C.png").exists()


def test_kaleido_returning_without_a_file_is_said_too(tmp_path, monkeypatch):
    """kaleido can come back without an error yet without the PNG (its browser timed out)."""
    import plotly.io as pio

    monkeypatch.setattr(plot_module, "find_chromium", lambda: str(tmp_path / "chromium"))
    monkeypatch.setattr(pio, "write_images", lambda figs, paths, **kwargs: None)
    with pytest.warns(UserWarning, match=r"C\.png not written: kaleido failed \(it wrote no file\)"):
        written = save_heatmap(_matrix(), tmp_path / "C")
    assert set(written) == {"html"}

"""Heatmap of an affinity matrix: plotly HTML always, PNG via kaleido when a Chromium exists.

The figure and `find_chromium` are `cat_models.plotting`'s. Without a Chromium the PNG is
skipped with a single notice (a `UserWarning`) per process; a kaleido failure skips it with a
notice naming the file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from cat_models.affinity.matrix import AffinityMatrix
from cat_models.plotting import find_chromium, heatmap_figure

__all__ = ["find_chromium", "heatmap_figure", "save_heatmap"]

_png_notice_given = False


def save_heatmap(affinity: AffinityMatrix, path: str | Path, png: bool = True,
                 include_plotlyjs: bool | str = True) -> dict[str, Path]:
    """Write `<stem>.html` (self-contained by default) and, if a Chromium exists, `<stem>.png`.

    Returns the written paths by kind ("html", "png").
    """
    global _png_notice_given
    stem = Path(path).with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    fig = heatmap_figure(affinity)
    written = {"html": stem.with_suffix(".html")}
    fig.write_html(written["html"], include_plotlyjs=include_plotlyjs)
    if png:
        chromium = find_chromium()
        if chromium is None:
            if not _png_notice_given:
                warnings.warn(
                    f"{stem}.png not written: no Chrome/Chromium found for kaleido (set "
                    "BROWSER_PATH or install chromium); the HTML heatmap was written",
                    stacklevel=2)
                _png_notice_given = True
        else:
            os.environ.setdefault("BROWSER_PATH", chromium)
            png_path = stem.with_suffix(".png")
            # kaleido and its browser driver fail in many ways on a loaded machine (their own
            # exception types, RuntimeError, OSError): the PNG is a convenience, never worth
            # the matrix or the HTML already written
            try:
                fig.write_image(png_path)
            except Exception as err:  # noqa: BLE001
                warnings.warn(f"{png_path} not written: kaleido failed ({err}); the HTML "
                              "heatmap was written", stacklevel=2)
            else:
                if png_path.is_file() and png_path.stat().st_size > 0:
                    written["png"] = png_path
    return written

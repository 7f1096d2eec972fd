"""Heatmap of an affinity matrix: plotly HTML always, PNG via kaleido when a Chromium exists.

The figure and `find_chromium` are `cat_models.plotting`'s. Without a Chromium the PNG is
skipped with a single notice (a `UserWarning`) per process; a kaleido failure skips it with a
notice naming the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from cat_models.affinity.matrix import AffinityMatrix
from cat_models.plotting import find_chromium, heatmap_figure, write_images

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
            png_path = stem.with_suffix(".png")
            pngs, error = write_images([(fig, png_path)], chromium)
            if pngs:
                written["png"] = pngs[0]
            else:   # an error, or kaleido came back without a file (see write_images)
                warnings.warn(f"{png_path} not written: kaleido failed "
                              f"({error or 'it wrote no file'}); the HTML heatmap was written",
                              stacklevel=2)
    return written

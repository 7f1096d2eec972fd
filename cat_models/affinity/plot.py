"""Heatmap of an affinity matrix: plotly HTML always, PNG via kaleido when a Chromium exists.

kaleido ≥ 1 renders through a Chrome/Chromium binary and would otherwise try to download one;
we never download. `find_chromium()` looks at $BROWSER_PATH, then the usual binary names on
PATH. Without one the PNG is skipped with a single notice (a `UserWarning`) per process.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

from cat_models.affinity.matrix import AffinityMatrix

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
                  "chrome")
_png_notice_given = False


def find_chromium() -> str | None:
    """Path of a Chrome/Chromium binary kaleido can use, or None."""
    explicit = os.environ.get("BROWSER_PATH")
    if explicit and Path(explicit).is_file():
        return explicit
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def heatmap_figure(affinity: AffinityMatrix, title: str | None = None):
    """A plotly Figure: rows = source classes, columns = target classes."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Heatmap(
        z=affinity.values, x=list(affinity.target_names), y=list(affinity.source_names),
        colorscale="Viridis", zmin=0.0, colorbar={"title": "affinity"},
        hovertemplate="target %{x}<br>source %{y}<br>%{z:.3f}<extra></extra>",
    ))
    fig.update_layout(
        title=title or f"{affinity.method} affinity "
                       f"({len(affinity.source_names)}×{len(affinity.target_names)})",
        xaxis_title="target class", yaxis_title="source class", yaxis_autorange="reversed",
        width=max(500, 16 * len(affinity.target_names) + 250),
        height=max(450, 14 * len(affinity.source_names) + 200),
    )
    return fig


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
            written["png"] = stem.with_suffix(".png")
            fig.write_image(written["png"])
    return written

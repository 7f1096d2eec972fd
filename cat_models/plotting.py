"""Plotting utilities shared by the affinity CLI and the study analysis: the affinity heatmap
and the Chrome/Chromium that kaleido needs for PNG/SVG export.

kaleido ≥ 1 renders through a Chrome/Chromium binary and would otherwise try to download one;
we never download. `find_chromium()` looks at $BROWSER_PATH, then the usual binary names on
PATH.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # importing cat_models.affinity pulls in torch: only when a matrix is drawn
    from cat_models.affinity.matrix import AffinityMatrix

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
                  "chrome")


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


def write_images(targets: list[tuple[Any, Path]], chromium: str) -> tuple[list[Path], str | None]:
    """Write each (figure, path) in one kaleido batch (one browser start) with `chromium`.

    Returns (the paths written, the error or None). Only files that exist and are not empty
    count as written: kaleido can return without an error yet without a file (its browser
    timed out on a loaded machine). kaleido and its browser driver raise many unrelated types
    (RuntimeError, their own Exception subclasses such as a JavascriptError from the tab,
    OSError): each becomes the error text, never a crash, since an image is never worth the
    HTML or the results written before it. `BROWSER_PATH` (where kaleido's driver looks for the
    browser) is restored afterwards.
    """
    import plotly.io as pio

    previous = os.environ.get("BROWSER_PATH")
    os.environ["BROWSER_PATH"] = chromium
    try:
        pio.write_images([f for f, _ in targets], [p for _, p in targets])
    except Exception as err:  # noqa: BLE001
        return [], str(err)
    finally:
        if previous is None:
            os.environ.pop("BROWSER_PATH", None)
        else:
            os.environ["BROWSER_PATH"] = previous
    return [p for _, p in targets if p.is_file() and p.stat().st_size > 0], None


def top_k_text(values: np.ndarray, k: int) -> list[list[str]]:
    """Per row, "#rank value" on its `k` largest cells, "" elsewhere.

    Stable descending order, so equal weights keep column order (as `top_matches` does).
    """
    text = [["" for _ in range(values.shape[1])] for _ in range(values.shape[0])]
    for r, row in enumerate(values):
        for rank, c in enumerate(np.argsort(-row, kind="stable")[:k], 1):
            text[r][c] = f"#{rank} {row[c]:.2f}"
    return text


def heatmap_figure(affinity: AffinityMatrix, rows: Literal["source", "target"] = "source",
                   top_k: int = 0, title: str | None = None) -> Any:
    """A plotly heatmap of A (`AffinityMatrix` stores [source, target]).

    `rows="source"` draws A as stored (the affinity CLI); `rows="target"` draws one row per
    target class, which reads as "which source classes does this new class borrow from"
    (paper §3.1, A_{k,l}; the study report), with its `top_k` cells annotated.
    """
    import plotly.graph_objects as go

    names = {"source": list(affinity.source_names), "target": list(affinity.target_names)}
    cols = "target" if rows == "source" else "source"
    values = affinity.values if rows == "source" else affinity.values.T
    k = max(1, min(top_k, values.shape[1])) if top_k else 0
    annotated = {"text": top_k_text(values, k), "texttemplate": "%{text}",
                 "textfont": {"size": 9}} if k else {}
    fig = go.Figure(go.Heatmap(
        z=values, x=names[cols], y=names[rows], colorscale="Viridis", zmin=0.0,
        colorbar={"title": "affinity"},
        hovertemplate=f"{cols} %{{x}}<br>{rows} %{{y}}<br>%{{z:.3f}}<extra></extra>",
        **annotated))
    default = (f"{affinity.method} affinity: target × source (top-{k} per target)" if k else
               f"{affinity.method} affinity ({len(affinity.source_names)}×"
               f"{len(affinity.target_names)})")
    cell = (58, 30) if k else (16, 14)    # annotated cells need room for "#1 0.42"
    fig.update_layout(
        title=title or default, xaxis_title=f"{cols} class", yaxis_title=f"{rows} class",
        yaxis_autorange="reversed", template="plotly_white",
        width=max(520, cell[0] * len(names[cols]) + 260),
        height=max(400, cell[1] * len(names[rows]) + 200))
    return fig

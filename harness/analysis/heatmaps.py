"""Affinity heatmaps for the report: target classes × source classes, top-k per target marked.

Reads the matrices the harness saved under `<study>/affinities/<method>.npy` (+ `.csv`/`.json`
names, `cat_models.affinity.matrix` format). Rows are target classes so each row reads as
"which source classes does this new class borrow from" (paper §3.1, A_{k,l}).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # importing cat_models.affinity pulls in torch: only when a matrix is read
    from cat_models.affinity.matrix import AffinityMatrix


def find_affinities(study_dir: str | Path) -> dict[str, Path]:
    """{method: .npy path} for every matrix under `<study_dir>/affinities/`."""
    folder = Path(study_dir) / "affinities"
    return {p.stem: p for p in sorted(folder.glob("*.npy"))} if folder.is_dir() else {}


def top_k_text(values_ts: np.ndarray, k: int) -> list[list[str]]:
    """Per target row, "#rank value" on its `k` largest source cells, "" elsewhere.

    Stable descending order, so equal weights keep source order (as `top_matches` does).
    """
    text = [["" for _ in range(values_ts.shape[1])] for _ in range(values_ts.shape[0])]
    for t, row in enumerate(values_ts):
        for rank, s in enumerate(np.argsort(-row, kind="stable")[:k], 1):
            text[t][s] = f"#{rank} {row[s]:.2f}"
    return text


def affinity_heatmap_figure(affinity: AffinityMatrix, top_k: int = 3,
                            title: str | None = None) -> Any:
    """plotly heatmap, rows = target classes, columns = source classes, top-k annotated."""
    import plotly.graph_objects as go

    values = affinity.values.T  # AffinityMatrix stores [source, target]
    k = max(1, min(top_k, values.shape[1]))
    fig = go.Figure(go.Heatmap(
        z=values, x=list(affinity.source_names), y=list(affinity.target_names),
        text=top_k_text(values, k), texttemplate="%{text}", textfont={"size": 9},
        colorscale="Viridis", colorbar={"title": "affinity"},
        hovertemplate="target %{y}<br>source %{x}<br>%{z:.3f}<extra></extra>"))
    fig.update_layout(
        title=title or f"{affinity.method} affinity: target × source (top-{k} per target)",
        xaxis_title="source class", yaxis_title="target class", yaxis_autorange="reversed",
        template="plotly_white",
        width=max(520, 58 * len(affinity.source_names) + 260),
        height=max(380, 30 * len(affinity.target_names) + 200))
    return fig


def load_affinity(path: Path) -> AffinityMatrix:
    """AffinityMatrix.load with the method named after the file when the sidecar lacks it."""
    from cat_models.affinity.matrix import AffinityError, AffinityMatrix

    try:
        matrix = AffinityMatrix.load(path)
    except (AffinityError, ValueError, OSError) as err:
        raise AffinityError(f"{path}: cannot read the affinity matrix: {err}") from None
    if matrix.method == "unknown":
        matrix = matrix.with_values(matrix.values, method=path.stem)
    return matrix

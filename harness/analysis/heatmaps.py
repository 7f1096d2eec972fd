"""Affinity heatmaps for the report: target classes × source classes, top-k per target marked.

Reads the matrices the harness saved under `<study>/affinities/<method>.npy` (+ `.csv`/`.json`
names, `cat_models.affinity.matrix` format). Rows are target classes so each row reads as
"which source classes does this new class borrow from" (paper §3.1, A_{k,l}).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing cat_models.affinity pulls in torch: only when a matrix is read
    from cat_models.affinity.matrix import AffinityMatrix


def find_affinities(study_dir: str | Path) -> dict[str, Path]:
    """{method: .npy path} for every matrix under `<study_dir>/affinities/`."""
    folder = Path(study_dir) / "affinities"
    return {p.stem: p for p in sorted(folder.glob("*.npy"))} if folder.is_dir() else {}


def affinity_heatmap_figure(affinity: AffinityMatrix, top_k: int = 3,
                            title: str | None = None) -> Any:
    """plotly heatmap, rows = target classes, columns = source classes, top-k annotated."""
    from cat_models.plotting import heatmap_figure

    return heatmap_figure(affinity, rows="target", top_k=max(1, top_k), title=title)


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


def class_iou_figure(final: Any, order: list[str] | None = None, title: str = "") -> Any:
    """Per-class IoU at each trial's last evaluation as a heatmap: one row per method (mean
    over seeds, in `order`) and a last row for the real images of the same label maps (the
    reference), one column per target class, one panel per target size; cells annotated in %.
    `final` is the final view (`harness.analysis.load.final_view`) with `iou/<class>` columns."""
    import numpy as np
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from harness.analysis.metrics import (
        CLASS_IOU_PREFIX,
        CLASS_IOU_REAL_PREFIX,
        class_iou_columns,
    )

    columns = class_iou_columns(final.columns)
    classes = [c[len(CLASS_IOU_PREFIX):] for c in columns]
    real = [CLASS_IOU_REAL_PREFIX + c for c in classes]
    sizes = (sorted(final["target_size"].dropna().unique()) if "target_size" in final
             else [None])
    methods = [m for m in (order or []) if m in set(final["method"])]
    methods += [m for m in dict.fromkeys(final["method"]) if m not in methods]
    fig = make_subplots(rows=len(sizes), cols=1, vertical_spacing=0.12 / max(1, len(sizes)),
                        subplot_titles=[f"{int(s)} target images" if s is not None else ""
                                        for s in sizes])
    for i, size in enumerate(sizes, start=1):
        part = final if size is None else final[final["target_size"] == size]
        z = [part[part["method"] == m][columns].astype(float).mean(0).to_numpy() * 100
             for m in methods]
        labels = [f"{m} (n={int((part['method'] == m).sum())})" for m in methods]
        if all(c in part for c in real):
            z.append(part[real].astype(float).mean(0).to_numpy() * 100)
            labels.append("real images")
        values = np.asarray(z)
        fig.add_trace(go.Heatmap(
            z=values, x=classes, y=labels, zmin=0, zmax=100, colorscale="Viridis",
            text=[["–" if np.isnan(v) else f"{v:.0f}" for v in row] for row in values],
            texttemplate="%{text}", textfont={"size": 10}, showscale=i == 1,
            colorbar={"title": "IoU %"},
            hovertemplate="%{y}<br>%{x}: %{z:.1f}%<extra></extra>"), row=i, col=1)
        fig.update_yaxes(autorange="reversed", row=i, col=1)
    rows = len(methods) + 1
    fig.update_layout(title=title or "per-class IoU at the last evaluation (mean over seeds)",
                      template="plotly_white", width=max(560, 62 * len(classes) + 300),
                      height=120 + len(sizes) * (34 * rows + 70))
    return fig

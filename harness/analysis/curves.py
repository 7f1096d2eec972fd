"""Curves with plotly: metrics vs target-set size (paper Fig. 4) and metrics vs iteration.

Figures are built by pure functions from the results DataFrames; `save_html` always writes
HTML, `export_images` writes PNG/SVG through kaleido in one batch when a Chrome/Chromium is
installed (kaleido ≥ 1 drives one; we never let it download one) and otherwise prints a single
notice per process and carries on.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.metrics import metric_spec, references_for

SIZE_METRICS = ("fid", "miou", "iters_to_convergence")   # paper Fig. 4, left to right
ITERATION_METRICS = ("fid", "miou")
PALETTE = ("#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d",
           "#666666", "#1f78b4", "#b2df8a")
_notice_given = False


def colors_for(labels: list[Any]) -> dict[Any, str]:
    """A stable colour per method (the same in every figure of a report)."""
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def size_curve_points(final: pd.DataFrame, metric: str, by: str = "method",
                      size: str = "target_size") -> pd.DataFrame:
    """Per (`by`, size): mean, std (ddof=1; 0 with one seed) and n of the displayed metric."""
    spec = metric_spec(metric)
    data = final[[by, size, metric]].dropna(subset=[metric]).copy()
    data["value"] = data[metric].astype(float) * spec.scale
    points = (data.groupby([by, size], sort=True)["value"]
              .agg(mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else 0.0, n="count")
              .reset_index())
    return points


def _panels(df: pd.DataFrame, metrics: tuple[str, ...], by: str, order: list[Any] | None,
            who: str) -> tuple[tuple[str, ...], list, Any, list[Any]]:
    """The metrics that have values, their specs, a one-row subplot figure, the line labels."""
    from plotly.subplots import make_subplots

    metrics = tuple(m for m in metrics if m in df and df[m].notna().any())
    if not metrics:
        raise ValueError(f"{who}: none of the metrics has values")
    specs = [metric_spec(m) for m in metrics]
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[s.header for s in specs],
                        horizontal_spacing=0.08)
    labels = [x for x in (order or sorted(df[by].dropna().unique().tolist()))
              if x in set(df[by])]
    return metrics, specs, fig, labels


def size_curves_figure(final: pd.DataFrame, metrics: tuple[str, ...] = SIZE_METRICS,
                       by: str = "method", order: list[Any] | None = None,
                       title: str = "") -> Any:
    """One panel per metric, log-x target-set size, one line per `by` with a ±std band; a
    metric's registered reference (FID floor, real images' mIoU) as a dashed grey line, when
    every row that has it has the same value (rows of other sample counts or targets: none)."""
    import plotly.graph_objects as go

    metrics, specs, fig, labels = _panels(final, metrics, by, order, "size_curves_figure")
    colors = colors_for(labels)
    for col, metric in enumerate(metrics, 1):
        points = size_curve_points(final, metric, by)
        for label in labels:
            p = points[points[by] == label].sort_values("target_size")
            if p.empty:
                continue
            x = p["target_size"].astype(float).tolist()
            hi, lo = (p["mean"] + p["std"]).tolist(), (p["mean"] - p["std"]).tolist()
            fig.add_trace(go.Scatter(
                x=x + x[::-1], y=hi + lo[::-1], fill="toself", mode="lines",
                line={"width": 0}, fillcolor=_rgba(colors[label], 0.18), hoverinfo="skip",
                name=f"{label} ±std", legendgroup=str(label), showlegend=False),
                row=1, col=col)
            fig.add_trace(go.Scatter(
                x=x, y=p["mean"].tolist(), mode="lines+markers", name=str(label),
                legendgroup=str(label), showlegend=col == 1,
                line={"color": colors[label], "width": 2},
                customdata=np.stack([p["std"], p["n"]], axis=1),
                hovertemplate=f"{label}<br>size %{{x}}<br>{specs[col - 1].label} "
                              "%{y:.2f} ± %{customdata[0]:.2f} (n=%{customdata[1]})"
                              "<extra></extra>"),
                row=1, col=col)
        for ref in references_for(metric):
            values = final[ref.name].dropna().unique() if ref.name in final else []
            if len(values) == 1:
                fig.add_hline(y=float(values[0]) * ref.scale, row=1, col=col,
                              line={"dash": "dash", "color": "#888888", "width": 1.5},
                              annotation_text=ref.label, annotation_position="bottom right")
        sizes = sorted(final["target_size"].dropna().unique().tolist())
        fig.update_xaxes(type="log", tickvals=sizes, ticktext=[str(int(s)) for s in sizes],
                         title_text="target images", row=1, col=col)
    fig.update_layout(title=title or "Metrics vs target-set size (mean ± std over seeds)",
                      width=380 * len(metrics) + 120, height=420, template="plotly_white",
                      legend={"orientation": "h", "y": -0.2})
    return fig


def trial_name(row: pd.Series, axes: list[str], by: str) -> str:
    parts = [str(row[by])] + [f"{a}={row[a]}" for a in axes if a != by and a in row]
    return " · ".join(parts)


def iteration_curves_figure(steps: pd.DataFrame, axes: list[str],
                            metrics: tuple[str, ...] = ITERATION_METRICS, by: str = "method",
                            order: list[Any] | None = None, title: str = "") -> Any:
    """One panel per metric; one line per trial (coloured by `by`) over training iterations."""
    import plotly.graph_objects as go

    metrics, specs, fig, labels = _panels(steps, metrics, by, order, "iteration_curves_figure")
    colors = colors_for(labels)
    shown: set[Any] = set()
    for trial_dir, trial in steps.groupby("trial_dir", sort=True):
        label = trial[by].iloc[0]
        name = trial_name(trial.iloc[0], axes, by)
        for col, spec in enumerate(specs, 1):
            t = trial.dropna(subset=[spec.name]).sort_values("iteration")
            if t.empty:
                continue
            fig.add_trace(go.Scatter(
                x=t["iteration"].tolist(), y=(t[spec.name].astype(float) * spec.scale).tolist(),
                mode="lines+markers", name=name, legendgroup=str(label),
                showlegend=label not in shown, line={"color": colors.get(label, "#444")},
                marker={"size": 4}, meta=str(trial_dir),
                hovertemplate=f"{name}<br>iter %{{x}}<br>{spec.label} %{{y:.2f}}<extra></extra>"),
                row=1, col=col)
            if label not in shown:
                fig.data[-1].name = str(label)
                shown.add(label)
    for col in range(1, len(specs) + 1):
        fig.update_xaxes(title_text="iteration", row=1, col=col)
    fig.update_layout(title=title or "Metrics vs training iteration (one line per trial)",
                      width=480 * len(metrics) + 120, height=420, template="plotly_white",
                      legend={"orientation": "h", "y": -0.2})
    return fig


# ----------------------------------------------------------------------------- files
def save_html(fig: Any, path: str | Path, js_dir: str | Path | None = None) -> Path:
    """A figure page that works offline. plotly.js (4.8 MB) is not inlined per figure: it is
    written once as `plotly.min.js` in `js_dir` (default: beside the page) and referenced."""
    path = Path(path).with_suffix(".html")
    path.parent.mkdir(parents=True, exist_ok=True)
    js = Path(js_dir or path.parent) / "plotly.min.js"
    if not js.is_file():
        from plotly.offline import get_plotlyjs

        js.parent.mkdir(parents=True, exist_ok=True)
        js.write_text(get_plotlyjs(), encoding="utf-8")
    fig.write_html(path, include_plotlyjs=os.path.relpath(js, path.parent))
    return path


def image_notice(chromium: str | None) -> str | None:
    if chromium:
        return None
    return ("[analysis] PNG/SVG figures skipped: no Chrome/Chromium found for kaleido (install "
            "one, e.g. `apt-get install chromium`, or set BROWSER_PATH); HTML figures were "
            "written")


def export_images(figures: dict[Path, Any], formats: tuple[str, ...] = ("png", "svg"),
                  chromium: str | None = None) -> tuple[list[Path], str | None]:
    """Write `<stem>.<fmt>` for every figure in one kaleido batch (one browser start).

    Returns (written paths, notice). Without a Chromium nothing is written and the notice is
    printed to stderr once per process; a kaleido failure becomes the notice, never a crash.
    """
    global _notice_given
    if chromium is None:
        from cat_models.plotting import find_chromium

        chromium = find_chromium()
    notice = image_notice(chromium)
    if notice is None and figures and formats:
        from cat_models.plotting import write_images

        targets = [(fig, stem.with_suffix(f".{fmt}")) for stem, fig in figures.items()
                   for fmt in formats]
        written, error = write_images(targets, chromium)
        if error is not None:
            notice = f"[analysis] PNG/SVG figures skipped: kaleido failed: {error}"
        elif len(written) == len(targets):
            return written, None
        else:
            missing = [p.name for _, p in targets if p not in written]
            notice = (f"[analysis] PNG/SVG figures: kaleido wrote {len(written)} of "
                      f"{len(targets)} files, not {', '.join(missing)}; the HTML figures are "
                      "complete (rerun `python -m harness.analyze` for the images)")
            print(notice, file=sys.stderr)   # a partial write is its own event each time
            return written, notice
    if notice and not _notice_given:
        print(notice, file=sys.stderr)
        _notice_given = True
    return [], notice

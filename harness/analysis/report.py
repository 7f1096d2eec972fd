"""One self-contained HTML report per study: summary, tables, curves, heatmaps, samples, files.

Self-contained = opens offline from anywhere: plotly.js is inlined once in <head>, figures are
<div>s, images are base64 data URIs. Only the links to the data files (Parquet/CSV/LaTeX)
point next to the report.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.analysis.tables import Table, to_html

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1240px;color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:4px;
margin-top:1.6em} .sub{color:#666;margin-top:0}
table.results,table.kv{border-collapse:collapse;margin:8px 0;font-size:14px}
table.results th,table.results td{padding:4px 10px;text-align:right;
border-bottom:1px solid #eee} table.results td:first-child,table.results th:first-child
{text-align:left} table.results thead tr:last-child th{border-bottom:2px solid #444}
table.results thead tr:first-child th{border-top:2px solid #444}
table.kv td{padding:2px 12px 2px 0;vertical-align:top} table.kv td:first-child{color:#666}
.note{color:#666;font-size:12px;margin-top:2px} .warn{background:#fff4e0;border:1px solid
#f0c36d;padding:6px 10px;border-radius:4px} figure{margin:12px 0;overflow-x:auto}
figcaption{color:#555;font-size:13px} img.samples{max-width:100%;image-rendering:pixelated;
border:1px solid #ddd} code{background:#f4f4f4;padding:1px 4px;border-radius:3px}
ul.files{columns:2;font-size:14px}
"""


@dataclass
class ReportContent:
    title: str
    subtitle: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    tables: dict[str, Table] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict)        # caption -> plotly Figure
    heatmaps: dict[str, Any] = field(default_factory=dict)      # method -> plotly Figure
    samples: dict[str, Path] = field(default_factory=dict)      # method -> PNG
    samples_caption: str = ""
    files: list[Path] = field(default_factory=list)             # data files to link


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _figure_div(fig: Any) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False,
                       config={"displaylogo": False, "responsive": True})


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _kv(summary: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in summary.items())
    return f"<table class='kv'>{rows}</table>"


def render_report(content: ReportContent, out: Path) -> Path:
    """Write the report to `out`; links to `content.files` are relative to it."""
    esc = html.escape
    parts = [f"<h1>{esc(content.title)}</h1>"]
    if content.subtitle:
        parts.append(f"<p class='sub'>{esc(content.subtitle)}</p>")
    parts += [f"<p class='warn'>{esc(n)}</p>" for n in content.notices]
    parts += ["<h2>Summary</h2>", _kv(content.summary)]
    if content.tables:
        parts.append("<h2>Tables</h2>")
        for name, table in content.tables.items():
            parts += [f"<h3>{esc(table.title or name)}</h3>", to_html(table)]
    if content.curves:
        parts.append("<h2>Curves</h2>")
        for caption, fig in content.curves.items():
            parts.append(f"<figure>{_figure_div(fig)}<figcaption>{esc(caption)}</figcaption>"
                         "</figure>")
    if content.heatmaps:
        parts.append("<h2>Class affinities</h2>")
        for method, fig in content.heatmaps.items():
            parts.append(f"<figure>{_figure_div(fig)}<figcaption>affinities/{esc(method)}.npy"
                         "</figcaption></figure>")
    if content.samples:
        parts.append("<h2>Samples</h2>")
        if content.samples_caption:
            parts.append(f"<p class='note'>{esc(content.samples_caption)}</p>")
        for method, png in content.samples.items():
            parts.append(f"<figure><figcaption><b>{esc(str(method))}</b> — "
                         f"{esc(png.parent.parent.name)}</figcaption><img class='samples' "
                         f"src='{_data_uri(png)}' alt='{esc(str(method))} samples'></figure>")
    if content.files:
        parts.append("<h2>Files</h2><ul class='files'>")
        for f in content.files:
            rel = os.path.relpath(f, out.parent)
            parts.append(f"<li><a href='{esc(rel)}'>{esc(rel)}</a></li>")
        parts.append("</ul>")
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{esc(content.title)}</title><style>{CSS}</style>"
            f"<script type='text/javascript'>{_plotly_js()}</script></head><body>"
            + "\n".join(parts) + "</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out

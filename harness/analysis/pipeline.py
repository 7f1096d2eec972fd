"""Everything from a study folder: data files, tables, curves, heatmaps, samples, report.

`analyze_study(study_dir)` is what `harness.run` calls at the end of a study and what
`python -m harness.analyze` runs; it works on finished, interrupted and failed studies alike.
Which tables a study gets follows from its declared axes (study.yaml `axes:`), not from its
name: rows = the axes except the seed, columns = metrics per transfer pair, ✓/✗ columns for
ablation switches that differ between the methods (paper Tables 1–5).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.analysis.curves import (
    export_images,
    iteration_curves_figure,
    save_html,
    size_curves_figure,
)
from harness.analysis.heatmaps import (
    affinity_heatmap_figure,
    class_iou_figure,
    find_affinities,
    load_affinity,
)
from harness.analysis.load import (
    ANALYSIS_DIRNAME,
    StudyResults,
    load_studies,
    parquet_engine,
    save_results,
)
from harness.analysis.metrics import PROVENANCE_KEYS, class_iou_columns
from harness.analysis.report import ReportContent, render_report
from harness.analysis.samples import compose_labelled, representative_samples
from harness.analysis.tables import RENDERERS, Table, build_table, varying_switches

TABLE_FORMATS = ("md", "tex", "csv")
# paper Tables 1–5 (FID, mIoU), with the real-data floor beside FID, KID with its ± and the
# real images' mIoU beside mIoU
MAIN_METRICS = ("fid", "fid_floor", "kid", "miou", "miou_real")
TRAINING_METRICS = ("best_fid", "iters_to_convergence", "wall_time_s")
ALWAYS_SWITCHES = ("freeze_d", "affinity", "training_free")


@dataclass
class AnalysisOutputs:
    """Paths of everything one analysis wrote (all under `out_dir`)."""

    out_dir: Path
    report: Path
    data: dict[str, Path] = field(default_factory=dict)
    tables: dict[str, dict[str, Path]] = field(default_factory=dict)   # name -> fmt -> path
    figures: dict[str, Path] = field(default_factory=dict)             # name -> HTML
    images: list[Path] = field(default_factory=list)                   # PNG/SVG when possible
    samples: Path | None = None
    notices: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        def text(v: Any) -> Any:
            if isinstance(v, dict):
                return {k: text(x) for k, x in v.items()}
            if isinstance(v, list):
                return [text(x) for x in v]
            return str(v) if isinstance(v, Path) else v
        return text(asdict(self))

    def describe(self) -> list[str]:
        """Where everything went, one line per kind of output (what the CLI prints)."""
        lines = [f"[analysis] output folder: {self.out_dir}",
                 "[analysis] data: " + ", ".join(p.name for p in self.data.values())]
        for name, paths in self.tables.items():
            lines.append(f"[analysis] table {name}: " + ", ".join(
                str(p.relative_to(self.out_dir)) for p in paths.values()))
        for path in [*self.figures.values(), *self.images]:
            lines.append(f"[analysis] figure: {path.relative_to(self.out_dir)}")
        if self.samples:
            lines.append(f"[analysis] samples: {self.samples.relative_to(self.out_dir)}")
        lines.append(f"[analysis] report: {self.report}")
        return lines


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text.replace("→", "-to-")).strip("-").lower() or "all"


def switch_candidates(results: StudyResults) -> list[str]:
    """Keys that may be ablation switches: the methods' `options` in study.yaml + known ones."""
    keys: list[str] = []
    for meta in results.studies:
        for m in meta.config.get("methods") or []:
            keys += [k for k in (m.get("options") or {}) if k not in keys]
    return keys + [k for k in ALWAYS_SWITCHES if k not in keys]


def study_tables(results: StudyResults) -> dict[str, Table]:
    """The tables a study's axes call for: "main" (FID/mIoU) and "training" (cost)."""
    final = results.final
    groups = ["pair"]
    if "target_size" in final and final["target_size"].nunique() > 1:
        groups.append("target_size")  # best-in-column then compares methods at equal data
    rows = [a for a in results.axes
            if a not in ("seed", "training_free", "study", *groups)]
    if not rows and "method" in final:
        rows = ["method"]
    switches = varying_switches(final, rows, switch_candidates(results))
    order = {"method": results.method_order,
             "pair": list(dict.fromkeys(s.pair for s in results.studies))}
    names = ", ".join(s.name for s in results.studies)
    tables = {}
    for name, wanted, title in (("main", MAIN_METRICS, f"{names}: final metrics"),
                                ("training", TRAINING_METRICS,
                                 f"{names}: convergence and cost")):
        metrics = [m for m in wanted if m in final and final[m].notna().any()]
        if metrics:
            tables[name] = build_table(final, rows, metrics, group_by=groups,
                                       switches=switches, order=order, title=title)
    classes = [c for c in class_iou_columns(final.columns) if final[c].notna().any()]
    if classes:
        tables["per_class"] = build_table(
            final, rows, classes, group_by=groups, switches=switches, order=order,
            title=f"{names}: IoU per target class at the last evaluation")
    return tables


def _by_pair(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    return [(str(p), part) for p, part in frame.groupby("pair", sort=False)]


def _line_labels(frame: pd.DataFrame, order: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Training-free and finetuned trials of one method (studies analysed together) must not
    share a curve: the former get their own line, "<method> (training-free)"."""
    if "training_free" not in frame or frame["training_free"].nunique() < 2:
        return frame, order
    tag = " (training-free)"
    frame = frame.copy()
    frame["method"] = [f"{m}{tag}" if free else m
                       for m, free in zip(frame["method"], frame["training_free"])]
    return frame, [f"{m}{t}" for m in order for t in ("", tag)]


def study_figures(results: StudyResults) -> dict[str, tuple[str, Any]]:
    """{file stem: (caption, figure)}: size curves when the target size varies, iteration
    curves when trials report more than one iteration."""
    figures: dict[str, tuple[str, Any]] = {}
    final, order = _line_labels(results.final, results.method_order)
    steps, _ = _line_labels(results.steps, results.method_order)
    for pair, part in _by_pair(final):
        if "target_size" in part and part["target_size"].nunique() > 1 and "method" in part:
            caption = (f"{pair}: FID / mIoU / iterations to convergence vs target-set size "
                       "(log x, mean ± std over seeds; paper Fig. 4)")
            figures[f"size_{slug(pair)}"] = (caption, size_curves_figure(
                part, order=order, title=f"{pair}: metrics vs target-set size"))
    for pair, part in _by_pair(final):
        if "method" in part and any(part[c].notna().any()
                                    for c in class_iou_columns(part.columns)):
            caption = (f"{pair}: IoU per target class at the last evaluation, mean over "
                       "seeds; last row: the real images of the same label maps")
            figures[f"class_iou_{slug(pair)}"] = (caption, class_iou_figure(
                part, order=order, title=f"{pair}: IoU per target class"))
    for pair, part in _by_pair(steps):
        # training-free trials report once (iteration 0): no curve to draw
        if "method" in part and part["iteration"].nunique() > 1 and any(
                m in part and part[m].notna().any() for m in ("fid", "miou")):
            figures[f"iterations_{slug(pair)}"] = (
                f"{pair}: metrics vs iteration, one line per trial",
                iteration_curves_figure(part, results.axes, order=order,
                                        title=f"{pair}: metrics vs iteration"))
    return figures


def summary_of(results: StudyResults, elapsed: float) -> dict[str, Any]:
    final = results.final
    status = final["status"].value_counts().to_dict() if "status" in final else {}
    summary: dict[str, Any] = {
        "studies": ", ".join(f"{s.name} ({s.path})" for s in results.studies),
        "transfer pairs": ", ".join(dict.fromkeys(final["pair"].astype(str))),
        "axes": ", ".join(results.axes) or "–",
        "trials": f"{len(final)} (" + ", ".join(f"{k}: {v}" for k, v in status.items()) + ")",
    }
    for axis in ("method", "target_size", "seed", "source_seed"):
        if axis in final:
            summary[axis] = ", ".join(str(v) for v in dict.fromkeys(final[axis].dropna()))
    for key in PROVENANCE_KEYS:
        if key in final:
            summary[key] = ", ".join(str(v) for v in final[key].dropna().unique()) or "–"
    ranking = dict.fromkeys(
        f"{(s.config.get('search') or {}).get('metric', 'fid')} (search.metric of {s.name})"
        for s in results.studies)
    summary["ranking metric"] = ("; ".join(ranking) + ": what the search optimised and what "
                                 "each trial's best iteration and iterations to convergence "
                                 "follow")
    if "wall_time_s" in final:
        summary["total trial time"] = f"{final['wall_time_s'].fillna(0).sum() / 60:.1f} min"
    summary["generated"] = time.strftime("%Y-%m-%d %H:%M:%S") + f" in {elapsed:.1f}s"
    return summary


def analyze_studies(study_dirs: list[str | Path], out_dir: str | Path | None = None,
                    formats: tuple[str, ...] = TABLE_FORMATS,
                    image_formats: tuple[str, ...] = ("png", "svg"), top_k: int = 3,
                    log: Callable[[str], None] | None = print) -> AnalysisOutputs:
    """Load, tabulate, plot and report. One study -> `<study>/analysis/`; several (e.g. one per
    transfer pair, paper Tables 1–2) -> `out_dir`, which is then required. `log` receives
    the lines saying where everything went (None: silent)."""
    start = time.perf_counter()
    unknown = [f for f in formats if f not in RENDERERS]
    if unknown:
        raise ValueError(f"--format: unknown {unknown}; expected some of {list(RENDERERS)}")
    if out_dir is None:
        if len(study_dirs) != 1:
            raise ValueError("analysing several studies needs an output folder (--output)")
        out_dir = Path(study_dirs[0]) / ANALYSIS_DIRNAME
    out = Path(out_dir).resolve()
    results = load_studies(study_dirs)
    outputs = AnalysisOutputs(out_dir=out, report=out / "report.html",
                              data=save_results(results, out))
    if parquet_engine() is None:
        outputs.notices.append("[analysis] Parquet skipped: neither pyarrow nor fastparquet is "
                               "installed; the results were written as CSV only")

    tables = study_tables(results)
    for name, table in tables.items():
        outputs.tables[name] = {}
        for fmt in formats:
            suffix, render = RENDERERS[fmt]
            path = out / "tables" / f"{name}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render(table), encoding="utf-8")
            outputs.tables[name][fmt] = path

    figures = study_figures(results)
    heatmaps: dict[str, Any] = {}
    for meta in results.studies:
        for method, npy in find_affinities(meta.path).items():
            key = method if len(results.studies) == 1 else f"{meta.name}-{method}"
            try:
                heatmaps[key] = affinity_heatmap_figure(load_affinity(npy), top_k=top_k)
            except ValueError as err:  # a bad matrix file must not sink the whole report
                outputs.notices.append(str(err))
    stems: dict[Path, Any] = {}
    for stem, (_, fig) in figures.items():
        outputs.figures[stem] = save_html(fig, out / "curves" / stem, js_dir=out)
        stems[out / "curves" / stem] = fig
    for key, fig in heatmaps.items():
        outputs.figures[f"affinity_{key}"] = save_html(fig, out / "heatmaps" / key, js_dir=out)
        stems[out / "heatmaps" / key] = fig
    outputs.images, notice = export_images(stems, image_formats)
    if notice:
        outputs.notices.append(notice)

    samples: dict[str, Path] = {}
    for meta in results.studies:
        part = results.final[results.final["study"] == meta.name].copy()
        part["trial_dir"] = [d.split("/", 1)[1] if len(results.studies) > 1 else d
                             for d in part["trial_dir"]]
        for method, png in representative_samples(part, meta.path, order=meta.method_order
                                                  ).items():
            samples[method if len(results.studies) == 1 else f"{meta.name}: {method}"] = png
    if samples:
        outputs.samples = compose_labelled(samples, out / "samples" / "samples_by_method.png")

    names = ", ".join(s.name for s in results.studies)
    content = ReportContent(
        title=f"CAT study report: {names}",
        subtitle="; ".join(str(s.config.get("description", "")).strip()
                           for s in results.studies if s.config.get("description")),
        tables=tables, curves={cap: fig for cap, fig in figures.values()},
        heatmaps=heatmaps, samples=samples, notices=list(outputs.notices),
        samples_caption="Per method: label map | real | generated on the same validation "
                        "label maps (lowest seed, most common target size).",
        files=[*outputs.data.values(), *(p for t in outputs.tables.values()
                                         for p in t.values()), *outputs.figures.values(),
               *outputs.images])
    content.summary = summary_of(results, time.perf_counter() - start)
    render_report(content, outputs.report)
    if log is not None:
        for line in outputs.describe():
            log(line)
    return outputs


def analyze_study(study_dir: str | Path, formats: tuple[str, ...] = TABLE_FORMATS,
                  out_dir: str | Path | None = None,
                  image_formats: tuple[str, ...] = ("png", "svg"),
                  log: Callable[[str], None] | None = print) -> AnalysisOutputs:
    """The entry `harness.run` calls: everything for one study, under `<study>/analysis/`."""
    return analyze_studies([study_dir], out_dir, formats, image_formats, log=log)

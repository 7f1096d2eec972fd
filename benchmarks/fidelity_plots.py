"""The pictures and tables of `fidelity_finetune.py` rows (its `--plot-only` options).

Per-run curves (`plot`), the generators' class readings (`plot_pathways`), curves pooled over
seeds with their mean ± std table (`seed_frame`, `pooled_table`, `plot_pooled`), paper Fig. 4
from each run's last evaluation (`size_frame`, `plot_sizes`), and the rare classes' IoU apart
from the others' for runs on a `--rare` few-shot set (`rare_frame`, `plot_rare`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def plot(path: Path, out: Path | None, select: str | None = None,
         with_floor: bool = True, sizes: str | None = None) -> int:
    """FID / KID / mIoU vs iteration for every run in `path` (or those whose "variant/affinity"
    is listed in `select`); each run's training-free value is a dashed line of its colour."""
    rows = _read(path, select, sizes)
    curves = []
    for row in rows:
        label = f"{row['variant']} / {row['affinity']} (n={row['size']}, seed {row['seed']}"
        label += f", FreezeD {row['freeze_d']}" if "freeze_d" in row else ""
        label += f", {rare_tag(row)})" if "rare" in row else ")"
        curves.append((label, [c["iteration"] for c in row["curve"]],
                       {m: [c[m] for c in row["curve"]] for m in METRICS}))
    return _draw(curves, _references(rows), out, with_floor)


def _read(path: Path, select: str | None, sizes: str | None = None,
          shown: list[str] | None = None) -> list[dict]:
    """The rows of `path`; `shown` keeps the runs whose few-shot set is of these kinds
    (`set_kind`)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if select:
        rows = [r for r in rows if f"{r['variant']}/{r['affinity']}" in select.split(",")]
    if sizes:
        rows = [r for r in rows if r["size"] in {int(x) for x in sizes.split(",")}]
    return of_kinds(rows, shown)


def _references(rows: list[dict]) -> dict:
    """The rows' real-data floor and real images' mIoU, each where every row has the same
    value (older rows have no miou_real; other targets or sample counts have other values)."""
    found: dict = {}
    for key in ("fid_floor", "kid_floor", "miou_real"):
        values = {r.get("floor", {}).get(key, r.get(key)) for r in rows}
        if len(values) == 1 and None not in values:
            found[key] = values.pop()
    return found


def _draw(curves: list[tuple[str, list[int], dict[str, list[float]]]], floor: dict,
          out: Path | None, with_floor: bool) -> int:
    """One panel per metric; each curve (label, iterations, metric -> values) drawn from
    iteration 0 on, its value at iteration -1 (training-free) as a dashed line."""
    from fidelity_common import PANEL_TITLES, line_panels

    panels = []
    ceiling = floor.get("miou_real")
    black = ("black: " + " / ".join(
        (["real-data floor"] if with_floor and "fid_floor" in floor else [])
        + (["real images' mIoU"] if ceiling is not None else [])) + "; dashed: training-free")
    for key, title in PANEL_TITLES.items():
        series, hlines = [], []
        for i, (label, its, values) in enumerate(curves):
            pts = [(it, v) for it, v in zip(its, values[key]) if it >= 0]
            series.append({"label": label, "colour": i, "x": [q[0] for q in pts],
                           "y": [q[1] for q in pts]})
            hlines.append({"y": values[key][0], "colour": i})
        if f"{key}_floor" in floor and with_floor:
            hlines.append({"y": floor[f"{key}_floor"], "colour": None, "label": black})
        if key == "miou" and ceiling is not None:
            hlines.append({"y": ceiling, "colour": None, "label": black})
        panels.append({"title": title, "series": series, "hlines": hlines})
    if out is not None:
        print(f"[plot] {line_panels(panels, out)}")
    return 0


PATHWAYS = {"a_top1": "A's top-1 = ground truth", "res_share": "residual branches' share",
            "class_contrast": "class contrast"}


def plot_pathways(path: Path, out: Path, select: str | None = None,
                  sizes: str | None = None) -> str:
    """FID and the `label_pathways` readings vs iteration for every run in `path` that
    recorded them (iteration 0 on), as a PNG; returns (and prints) them as a markdown table."""
    from fidelity_common import line_panels

    rows = [r for r in _read(path, select, sizes)
            if any("pathways" in c for c in r["curve"])]
    if not rows:
        raise SystemExit(f"{path}: no run recorded its label pathways")
    lines = ["| run | iteration | FID | " + " | ".join(PATHWAYS.values()) + " |",
             "|---|---:|---:|" + "---:|" * len(PATHWAYS)]
    panels = [{"title": "FID", "series": []}] + [{"title": t, "series": []}
                                                  for t in PATHWAYS.values()]
    for k, row in enumerate(rows):
        label = f"{row['variant']} / {row['affinity']} (n={row['size']}, seed {row['seed']})"
        evals = [c for c in row["curve"] if "pathways" in c]
        values = [[c["fid"] for c in evals]] + [
            [c["pathways"].get(key) or 0.0 for c in evals] for key in PATHWAYS]
        for panel, ys in zip(panels, values):
            panel["series"].append({"label": label, "x": [c["iteration"] for c in evals],
                                    "y": ys, "colour": k, "dash": False})
        lines += [f"| {label} | {c['iteration']} | {c['fid']:.1f} | "
                  + " | ".join(f"{c['pathways'].get(key)}" for key in PATHWAYS) + " |"
                  for c in evals]
    print(f"[plot] {line_panels(panels, out)}")
    table = "\n".join(lines)
    print(table)
    return table


METRICS = ("fid", "kid", "miou")
# One pooled curve each: runs of another target domain or source model never pool together;
# nor do runs on another kind of few-shot set ("rare", a column only where a row has one).
GROUP = ["target", "source_iterations", "variant", "affinity", "target_size", "freeze_d"]


def rare_tag(row: dict) -> str:
    """How a --rare run's few-shot set shows its rare classes ("" for the harness's set)."""
    rare = row.get("rare")
    if not rare:
        return ""
    k = rare["per_class"]
    shown = "in no image" if k == 0 else f"{k} image{'' if k == 1 else 's'} each"
    return f"{', '.join(rare['classes'])}: {shown}"


def group_columns(frame: pd.DataFrame) -> list[str]:
    """GROUP, and "rare" where some run's few-shot set was a --rare one."""
    return [*GROUP, "rare"] if (frame["rare"] != "").any() else GROUP


def class_means(evaluation: dict, classes: list[str]) -> tuple[float, float]:
    """(mean IoU of `classes`, mean IoU of the other classes) of one evaluation."""
    iou = evaluation["iou"]
    missing = sorted(set(classes) - set(iou))
    if missing:
        raise ValueError(f"no IoU recorded for {missing} (classes: {sorted(iou)})")
    inside = [v for k, v in iou.items() if k in classes]
    outside = [v for k, v in iou.items() if k not in classes]
    return sum(inside) / len(inside), sum(outside) / len(outside)


def seed_frame(rows: list[dict]) -> pd.DataFrame:
    """One row per (run, evaluation): GROUP, seed, iteration (-1 = the training-free model)
    and METRICS. Refuses a seed found twice in a group, and seeds of one group evaluated at
    other iterations (their mean would mix evaluations)."""
    import pandas as pd
    from fidelity_common import TARGET_KIND

    frame = pd.DataFrame([{"target": r.get("target", TARGET_KIND),   # rows before --target
                           "source_iterations": r.get("source_iterations"),
                           "variant": r["variant"], "affinity": r["affinity"],
                           "target_size": r["size"], "freeze_d": r.get("freeze_d"),
                           "rare": rare_tag(r),
                           "seed": r["seed"], "iteration": c["iteration"],
                           **{m: c[m] for m in METRICS},
                           # references, drawn as dashed lines in the size plot
                           "fid_floor": r.get("floor", {}).get("fid_floor"),
                           "miou_real": r.get("miou_real")}
                          for r in rows for c in r["curve"]])
    for key, part in frame.groupby(group_columns(frame), dropna=False, sort=False):
        name = "/".join(map(str, key))
        runs = part.groupby("seed", sort=False)["iteration"].apply(tuple)
        twice = part.loc[part.duplicated(["seed", "iteration"]), "seed"].unique()
        if len(twice):
            raise ValueError(f"{name}: seed found twice: {sorted(twice.tolist())}")
        if runs.nunique() > 1:
            other = runs[runs != runs.iloc[0]].index[0]
            raise ValueError(f"{name}: seed {other} was evaluated at other iterations than "
                             f"seed {runs.index[0]}")
    return frame


def pooled_table(frame: pd.DataFrame) -> str:
    """Markdown of mean ± std over the seeds per group and evaluation, by the harness's own
    seed table (sample std, the metrics' display scales: KID×10³, mIoU %)."""
    from harness.analysis.tables import build_table, to_markdown

    return to_markdown(build_table(frame, rows=[*group_columns(frame), "iteration"],
                                   metrics=list(METRICS),
                                   group_by=None, title="iteration -1: training-free"))


def plot_pooled(path: Path, out: Path | None, select: str | None = None,
                with_floor: bool = True, sizes: str | None = None,
                shown: list[str] | None = None) -> int:
    """The mean over seeds of each group's curve (solid) and of its training-free value
    (dashed), plus the markdown table of `pooled_table` on stdout; `shown` as in `_read`."""
    rows = _read(path, select, sizes, shown)
    frame = seed_frame(rows)
    print(pooled_table(frame))
    curves = []
    varies = [c for c in ("target", "source_iterations") if frame[c].nunique(dropna=False) > 1]
    columns = group_columns(frame)
    for key, part in frame.groupby(columns, dropna=False, sort=False):
        g = dict(zip(columns, key))
        where = "".join(f", {g['target']}" if c == "target" else
                        f", source {g['source_iterations']} it" for c in varies)
        n = part["seed"].nunique()
        where += f", {g['rare']}" if g.get("rare") else ""
        label = (f"{g['variant']} / {g['affinity']} (n={g['target_size']}, FreezeD "
                 f"{g['freeze_d']}{where}, mean of {n} seed{'s' if n > 1 else ''})")
        mean = part.groupby("iteration")[list(METRICS)].mean()
        curves.append((label, list(mean.index), {m: mean[m].tolist() for m in METRICS}))
    return _draw(curves, _references(rows), out, with_floor)


def size_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Per run (GROUP, seed): its last evaluation, method "<affinity> finetuned (<its> it)",
    and its training-free model (iteration -1), method "<affinity> training-free"; a run's
    other group fields (variant, FreezeD, target, source) are named only when they vary."""
    import pandas as pd

    columns = group_columns(frame)
    varies = [c for c in columns if c not in ("affinity", "target_size")
              and frame[c].nunique(dropna=False) > 1]
    rows = []
    for _, run in frame.groupby([*columns, "seed"], dropna=False, sort=False):
        first = run.iloc[0]
        where = "".join(f", {c} {first[c]}" for c in varies)
        last = run.loc[run["iteration"].idxmax()]
        start = run[run["iteration"] == -1]
        rows.append({**last.to_dict(),
                     "method": f"{first['affinity']} finetuned ({last['iteration']} it{where})"})
        if len(start):
            rows.append({**start.iloc[0].to_dict(),
                         "method": f"{first['affinity']} training-free{where}"})
    return pd.DataFrame(rows)


def plot_sizes(path: Path, out: Path, select: str | None = None,
               sizes: str | None = None) -> Path:
    """Paper Fig. 4 from the rows in `path`: metrics vs few-shot set size, ±std over seeds."""
    from harness.analysis.curves import export_images, save_html, size_curves_figure

    final = size_frame(seed_frame(_read(path, select, sizes)))
    order = sorted(final["method"].unique(), key=lambda m: ("training-free" in m, m))
    seeds = sorted(set(final.groupby(["method", "target_size"])["seed"].nunique()))
    counts = "–".join(map(str, seeds[::max(len(seeds) - 1, 1)]))
    fig = size_curves_figure(final, metrics=METRICS, order=order, title=(
        "Last evaluation and training-free start vs few-shot set size "
        f"(mean ± std over {counts} seed{'s' if seeds != [1] else ''})"))
    written, notice = export_images({out.with_suffix(""): fig}, formats=("png",))
    if written:
        print(f"[plot] {written[0]}")
        return written[0]
    html = save_html(fig, out.with_suffix(".html"))   # no PNG here: the interactive figure
    print(f"[plot] {html} ({notice})")
    return html


RARE_PANELS = {"fid": "FID (lower is better)", "iou_rare": "mean IoU, rare classes",
               "iou_other": "mean IoU, other classes"}


# How `shown` names the runs on the harness's few-shot set (no --rare).
HARNESS_SET = "kl"


def set_kind(row: dict) -> str:
    """A run's few-shot set: how many images showed each of its rare classes ("0", "1", ...),
    or HARNESS_SET for the harness's KL-greedy set."""
    return str(row["rare"]["per_class"]) if "rare" in row else HARNESS_SET


def of_kinds(rows: list[dict], shown: list[str] | None) -> list[dict]:
    """The rows whose few-shot set is of one of the kinds `shown` (`set_kind`; None: all)."""
    return rows if shown is None else [r for r in rows if set_kind(r) in shown]


def rare_frame(rows: list[dict], classes: list[str] | None = None,
               shown: list[str] | None = None) -> pd.DataFrame:
    """One row per (run, evaluation) of the runs with rare classes: their group (as in
    `seed_frame`), seed, iteration, FID and the mean IoU of the rare classes and of the
    others. A run's rare classes are its own; `classes` names them for runs on the harness's
    few-shot set (left out without it). `shown` keeps only the runs whose set showed the
    rare classes in that many images each ("0", "1", ...; HARNESS_SET: the harness's set)."""
    import pandas as pd

    kept = [r for r in of_kinds(rows, shown) if "rare" in r or classes]
    if not kept:
        raise SystemExit("no run with rare classes (run with --rare, or pass --rare to "
                         "read the harness's runs)")
    frame = seed_frame(kept)
    values = []
    for r in kept:
        names = r["rare"]["classes"] if "rare" in r else classes
        values += [dict(zip(("iou_rare", "iou_other"), class_means(c, names)))
                   for c in r["curve"]]
    return pd.concat([frame, pd.DataFrame(values, index=frame.index)], axis=1)


def plot_rare(path: Path, out: Path, select: str | None = None, sizes: str | None = None,
              classes: list[str] | None = None, shown: list[str] | None = None) -> str:
    """`rare_frame` pooled over seeds: FID and the rare and other classes' mean IoU vs
    iteration as a PNG (training-free dashed); returns (and prints) mean ± std as markdown."""
    from fidelity_common import line_panels

    frame = rare_frame(_read(path, select, sizes), classes, shown)
    columns = group_columns(frame)
    varies = [c for c in columns if frame[c].nunique(dropna=False) > 1]
    panels = [{"title": t, "series": [], "hlines": []} for t in RARE_PANELS.values()]
    lines = ["| run | seeds | iteration | FID | rare classes' IoU % | other classes' IoU % |",
             "|---|---:|---:|---:|---:|---:|"]
    for k, (key, part) in enumerate(frame.groupby(columns, dropna=False, sort=False)):
        g = dict(zip(columns, key))
        label = " / ".join(str(g[c]) if c != "rare" else g[c] or "KL-greedy set"
                           for c in varies) or "all runs"
        stats = part.groupby("iteration")[list(RARE_PANELS)].agg(["mean", "std"])
        n = part["seed"].nunique()
        for panel, metric in zip(panels, RARE_PANELS):
            mean = stats[(metric, "mean")]
            panel["series"].append({"label": f"{label} ({n} seed{'s' if n > 1 else ''})",
                                    "colour": k, "x": [i for i in mean.index if i >= 0],
                                    "y": [mean[i] for i in mean.index if i >= 0]})
            if -1 in mean.index:
                panel["hlines"].append({"y": mean[-1], "colour": k})
        lines += [f"| {label} | {n} | {it} | "
                  + " | ".join(_mean_std(stats.loc[it, m], scale) for m, scale in
                               (("fid", 1), ("iou_rare", 100), ("iou_other", 100))) + " |"
                  for it in stats.index]
    print(f"[plot] {line_panels(panels, out)}")
    table = "\n".join(lines)
    print(table)
    return table


def _mean_std(cell: pd.Series, scale: float) -> str:
    """'mean ± std' of one (mean, std) pair, times `scale`; the mean alone for one seed."""
    mean, std = cell["mean"] * scale, cell["std"] * scale
    return f"{mean:.1f}" if math.isnan(std) else f"{mean:.1f} ± {std:.1f}"

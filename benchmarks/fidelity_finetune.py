"""Does finetuning improve on CAT's training-free start? Per-iteration curves (issue #13, 1).

    python benchmarks/fidelity_finetune.py --cache /work/cache --size 50 --seed 0 \
        --variants paper,fixed --affinities combination,random --iterations 300 --eval-every 25 \
        --out /tmp/ft.json [--plot docs/images/fidelity_curves.png]

Runs the comparison straight through `cat_models` (no Ray, no harness trial): the source
model, the evaluation and source segmenters and the target benchmark come from a harness
cache (`studies/training_free.yaml` builds all of them); the few-shot subset is the harness's
(KL-greedy, paper §4.1) and its affinity matrices are estimated here with the harness's
estimator settings. For each (variant, affinity) it records

* the training-free model (the source EMA behind A, paper Table 3), then
* `finetune_oasis("cat", ...)` evaluated at iteration 0 (what the loop starts from) and
  every `--eval-every` iterations: FID, KID ± std, the real-data floor, mIoU.

A *variant* is a set of `cat` recipe options / `OasisConfig` fields (see VARIANTS); "paper" is
the recipe as the paper describes it and the harness ran it before issue #13. JSON lines go to
`--out` (appended, so runs can be split across invocations); `--plot` draws every curve found
in the file. `--rare house,sea --rare-images 1` trains on a long-tail few-shot set instead
(`cat_models.data.rare_class_subset`: those classes in exactly one image each) and
`--plot-only --rare-plot PNG` reads those runs' rare and other classes apart. `torch.set_num_threads(--threads)` (default 1): the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import pandas as pd

# name -> (cat recipe options, OasisConfig fields, finetune_oasis keywords): each one a
# hypothesis of issue #13. "paper" is the recipe as the paper describes it (and the harness ran
# it before): G starts from the raw source generator, its new D head is trained together with
# G from the first step.
PAPER = {"source_weights": "generator", "bn_refresh_batches": 0}
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "paper": ({"d_warmup": 0}, {}, PAPER),
    "g_from_ema": ({"d_warmup": 0}, {}, {**PAPER, "source_weights": "ema"}),
    "d_warmup": ({"d_warmup": 50}, {}, PAPER),
    "bn_refresh": ({"d_warmup": 0}, {}, {**PAPER, "bn_refresh_batches": 50}),
    "labelmix0": ({"d_warmup": 0}, {"lambda_labelmix": 0.0}, PAPER),
    "lr_g_low": ({"d_warmup": 0}, {"lr_g": 2e-5}, PAPER),
    "ema_slow": ({"d_warmup": 0}, {"ema_decay": 0.999}, PAPER),
    "d_keep_fake": ({"d_warmup": 0, "d_head": "keep_fake"}, {}, PAPER),
    "d_affinity": ({"d_warmup": 0, "d_head": "affinity"}, {}, PAPER),
    # D sees every image (and label map) through DiffAugment-style transforms
    "d_augment": ({"d_warmup": 0}, {"d_augment": "color,translation,cutout"}, PAPER),
    "d_augment_geo": ({"d_warmup": 0}, {"d_augment": "translation,cutout"}, PAPER),
    "d_augment_color": ({"d_warmup": 0}, {"d_augment": "color"}, PAPER),
    "defaults": ({}, {}, {}),   # whatever the library does now
}
TRIAL = {"lr_g": 1e-4, "lr_d": 4e-4, "batch_size": 8, "lambda_labelmix": 10.0}


def main() -> int:
    from fidelity_common import TARGET_KIND, Bench, label_pathways

    from cat_models.data.synthetic_domains import GROUND_TRUTHS
    from cat_models.oasis.finetune import finetune_oasis
    from cat_models.oasis.transfer import random_affinity

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", type=Path, default=Path("/work/cache"))
    p.add_argument("--size", type=int, default=50)
    p.add_argument("--target", default=TARGET_KIND,
                   help="target dataset kind in the cache (synthetic_target, synthetic_aerial; "
                        "synthetic_source with --affinities identity: the source-domain control)")
    p.add_argument("--source-seed", type=int, default=0,
                   help="the source model pretrained from this seed (the cache may hold several)")
    p.add_argument("--source-iterations", type=int,
                   help="the source model pretrained for this many iterations (default: the "
                        "newest of the seed's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rare", help="a long-tail probe: these target classes (comma-separated) "
                   "are shown by exactly --rare-images images of the few-shot set "
                   "(cat_models.data.rare_class_subset), the rest is KL-greedy without them")
    p.add_argument("--rare-images", type=int, default=1,
                   help="with --rare: images per rare class (0: the set never shows them)")
    p.add_argument("--ranking", help="the combination's tie-break order, best first (e.g. "
                   "segmentation,text,features); default: by training-free FID on the test set")
    p.add_argument("--variants", default="paper,fixed")
    p.add_argument("--affinities", default="combination,random")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--stage1", type=int, default=100)
    p.add_argument("--freeze-d", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--n-samples", type=int, default=64)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra recipe option or OasisConfig field for every run (JSON value)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--plot", type=Path)
    p.add_argument("--plot-only", action="store_true")
    p.add_argument("--no-floor", action="store_true",
                   help="leave the real-data floor out of the plot (zooms the FID/KID axes)")
    p.add_argument("--select", help="plot only these variant/affinity runs (comma-separated)")
    p.add_argument("--sizes", help="plot only the runs of these few-shot set sizes "
                                   "(comma-separated)")
    p.add_argument("--pool-seeds", action="store_true",
                   help="with --plot-only: one curve per (variant, affinity, size, FreezeD), the "
                        "mean over the seeds in the file, and a markdown table of mean ± std")
    p.add_argument("--size-plot", type=Path,
                   help="with --plot-only: FID / KID / mIoU at each run's last evaluation and "
                        "training-free vs the few-shot set size (paper Fig. 4), mean ± std over "
                        "the seeds in the file, as PNG (HTML where no PNG can be "
                        "written)")
    p.add_argument("--pathways", type=Path,
                   help="with --plot-only: how each run's generator tells the target classes "
                        "apart over its evaluations (A's top-1 against the ground truth, the "
                        "residual branches' share, the classes' contrast; see "
                        "fidelity_common.label_pathways) with FID beside them, as PNG, and a "
                        "markdown table")
    p.add_argument("--rare-plot", type=Path,
                   help="with --plot-only: the runs with --rare, mean over seeds: FID and the "
                        "mean IoU of the rare classes and of the other classes vs iteration, "
                        "as PNG, and a markdown table of mean ± std; with --rare, runs on the "
                        "harness's set too, those classes read as their rare ones")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--samples", type=Path,
                   help="save a sample grid (label map | real | generated) of each evaluation "
                        "here: <variant>-<affinity>-<size>-s<seed>-it<iteration>.png")
    p.add_argument("--train-fid", action="store_true",
                   help="also score against the few-shot set itself (memorisation check)")
    args = p.parse_args()
    if args.plot_only:
        if args.pathways:
            plot_pathways(args.out, args.pathways, args.select, args.sizes)
        if args.size_plot:
            plot_sizes(args.out, args.size_plot, args.select, args.sizes)
        if args.rare_plot:
            plot_rare(args.out, args.rare_plot, args.select, args.sizes,
                      args.rare.split(",") if args.rare else None)
        if args.pool_seeds:
            return plot_pooled(args.out, args.plot, args.select, not args.no_floor,
                               args.sizes)
        if (args.pathways or args.size_plot or args.rare_plot) and not args.plot:
            return 0
        return plot(args.out, args.plot, args.select, not args.no_floor, args.sizes)
    torch.set_num_threads(args.threads)

    bench = Bench(args.cache, args.size, args.seed, args.n_samples, args.target,
                  args.source_seed, args.source_iterations,
                  (args.rare.split(","), args.rare_images) if args.rare else None)
    if args.train_fid:
        bench.track_training_set()
    source, test, data, score = bench.source, bench.test, bench.train, bench.score
    wanted = args.affinities.split(",")
    mats = bench.affinities([w for w in wanted if w != "identity"],
                            args.out.parent / "affinities" / args.target,
                            args.ranking.split(",") if args.ranking else None)
    if "identity" in wanted:   # the control: the source's own classes, A = I
        import numpy as np
        mats["identity"] = np.eye(source.num_classes, test.num_classes)
    extra = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    cfg_fields = set(source.cfg.to_dict())

    def pathways(generator) -> dict:
        return {"pathways": label_pathways(generator, source.class_names, test.class_names,
                                           GROUND_TRUTHS.get(args.target))}
    for variant in args.variants.split(","):
        options, cfg_over, ft = VARIANTS[variant]
        options = {**options, **{k: v for k, v in extra.items() if k not in cfg_fields}}
        cfg_over = {**cfg_over, **{k: v for k, v in extra.items() if k in cfg_fields}}
        cfg = source.cfg.replace(**{**TRIAL, **cfg_over})
        for aff in wanted:
            a = None if aff == "random" else mats[aff]
            if a is None:   # the harness's random A: the trial's seed
                a = random_affinity(source.num_classes, test.num_classes, args.seed)
            start = time.perf_counter()
            curve = [{"iteration": -1, **bench.training_free(a)}]
            stem = f"{variant}-{aff}-{args.size}-s{args.seed}"
            if args.samples:
                from cat_models.oasis.sampling import training_free_generator

                bench.save_samples(training_free_generator(source, a),
                                   args.samples / f"{stem}-training-free.png")
            kw = dict(affinity=a, freeze_d=args.freeze_d, stage1_iters=args.stage1, **options,
                      **ft)

            s0 = finetune_oasis("cat", source, data, 0, cfg, seed=args.seed, **kw)
            curve.append({"iteration": 0, **score(s0.ema), **pathways(s0.ema)})

            def evaluate(ema, step, variant=variant, aff=aff, stem=stem):
                r = {**score(ema), **pathways(ema)}
                if args.samples:
                    bench.save_samples(ema, args.samples / f"{stem}-it{step}.png")
                print(f"  {variant}/{aff} it {step}: "
                      f"{ {k: v for k, v in r.items() if k not in ('tv_class', 'iou', 'pathways')} }"
                      f" {({k: v for k, v in r['pathways'].items() if k != 'a_argmax'})}",
                      flush=True)
                return r

            state = finetune_oasis("cat", source, data, args.iterations, cfg, seed=args.seed,
                                   evaluate_fn=evaluate, eval_every=args.eval_every,
                                   report_every=0, **kw)
            keys = ("iteration", "fid", "kid", "kid_std", "miou", "iou", "tv", "tv_x", "tv_y",
                    "tv_class", "fid_train", "kid_train", "miou_train", "pathways")
            curve += [{k: h[k] for k in keys if k in h} for h in state.history if "fid" in h]
            row = {"variant": variant, "affinity": aff, "size": args.size, "seed": args.seed,
                   "target": args.target, "source_seed": args.source_seed,
                   "source_iterations": bench.source_iterations,
                   "ranking": bench.ranking, "freeze_d": args.freeze_d,
                   "stage1_iterations": args.stage1,
                   "options": {**options, **cfg_over, **ft}, "floor": bench.evaluator.floor,
                   **bench.evaluator.reference,
                   "real_tv": bench.real_tv, "real_tv_class": bench.real_tv_class,
                   "curve": curve, "seconds": round(time.perf_counter() - start)}
            if args.rare:
                row["rare"] = {"classes": args.rare.split(","), "per_class": args.rare_images}
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"[done] {variant}/{aff}: training-free {curve[0]['fid']:.1f} / "
                  f"{curve[0]['miou']:.3f}, start {curve[1]['fid']:.1f}, best "
                  f"{min(c['fid'] for c in curve[1:]):.1f}, final {curve[-1]['fid']:.1f} / "
                  f"{curve[-1]['miou']:.3f} ({row['seconds']} s)", flush=True)
    if args.plot:
        plot(args.out, args.plot)
    return 0


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


def _read(path: Path, select: str | None, sizes: str | None = None) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if select:
        rows = [r for r in rows if f"{r['variant']}/{r['affinity']}" in select.split(",")]
    if sizes:
        rows = [r for r in rows if r["size"] in {int(x) for x in sizes.split(",")}]
    return rows


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
                with_floor: bool = True, sizes: str | None = None) -> int:
    """The mean over seeds of each group's curve (solid) and of its training-free value
    (dashed), plus the markdown table of `pooled_table` on stdout."""
    rows = _read(path, select, sizes)
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


def rare_frame(rows: list[dict], classes: list[str] | None = None) -> pd.DataFrame:
    """One row per (run, evaluation) of the runs with rare classes: their group (as in
    `seed_frame`), seed, iteration, FID and the mean IoU of the rare classes and of the
    others. A run's rare classes are its own; `classes` names them for runs on the harness's
    few-shot set (left out without it)."""
    import pandas as pd

    kept = [r for r in rows if "rare" in r or classes]
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
              classes: list[str] | None = None) -> str:
    """`rare_frame` pooled over seeds: FID and the rare and other classes' mean IoU vs
    iteration as a PNG (training-free dashed); returns (and prints) mean ± std as markdown."""
    from fidelity_common import line_panels

    frame = rare_frame(_read(path, select, sizes), classes)
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


if __name__ == "__main__":
    raise SystemExit(main())

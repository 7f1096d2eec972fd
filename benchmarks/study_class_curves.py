"""Curves and the final table of a harness study, with chosen target classes apart.

    python benchmarks/study_class_curves.py outputs/absent_classes --classes river,roof \
        [--training-free outputs/absent_classes_training_free] [--size N] [--plot PNG]

Reads `<study>/analysis/results_steps.csv` (written by the study's analysis; per-class IoU
columns `iou/<class>`), pools the seeds of each method, and draws FID, KID (×10³), mIoU and the
mean IoU of the `--classes` and of the other classes vs iteration (mean over seeds), with
the training-free study's values (same sets, `training_free: true`) of the same method labels
as dashed lines (its table lists every method of it). Prints
mean ± std at the last evaluation. A study with several target sizes needs `--size`: only
that size's trials are read (from both studies). Check (a) on the same two studies:
`benchmarks/fidelity_checks.py STUDY TRAINING_FREE --cat METHOD`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

# titles in ASCII: the picture's default bitmap font has no "×" or "³"
PANELS = {"fid": ("FID (lower is better)", 1.0), "kid": ("KID x 1000", 1000.0),
          "miou": ("mIoU %", 100.0), "iou_named": ("IoU % of the named classes", 100.0),
          "iou_other": ("IoU % of the other classes", 100.0)}


def steps_frame(study: Path, classes: list[str], size: int | None = None) -> pd.DataFrame:
    """One row per (trial, evaluation): method, seed, iteration, the metrics, and the mean IoU
    of `classes` and of the other classes (over those with a value); with `size`, the trials
    of that target size only. Several sizes without `size` are refused (they would pool)."""
    path = study / "analysis" / "results_steps.csv"
    if not path.is_file():
        raise SystemExit(f"error: {path}: not found (run the study, or "
                         f"`python -m harness.analyze {study}`)")
    frame = pd.read_csv(path)
    sizes = (sorted(frame["target_size"].dropna().unique().tolist())
             if "target_size" in frame else [])
    if size is not None:
        if size not in sizes:
            raise SystemExit(f"error: --size {size}: {path} has target sizes {sizes}")
        frame = frame[frame["target_size"] == size]
    elif len(sizes) > 1:
        raise SystemExit(f"error: {path} has target sizes {sizes}: pick one with --size")
    iou = [c for c in frame.columns if c.startswith("iou/")]
    names = [c[len("iou/"):] for c in iou]
    unknown = [c for c in classes if c not in names]
    if unknown:
        raise SystemExit(f"error: --classes: {unknown} have no IoU column in {path} "
                         f"(classes: {names})")
    named = [f"iou/{c}" for c in classes]
    frame["iou_named"] = frame[named].mean(axis=1)
    frame["iou_other"] = frame[[c for c in iou if c not in named]].mean(axis=1)
    return frame.dropna(subset=["fid"])


def pooled(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (method, iteration)."""
    return frame.groupby(["method", "iteration"], sort=False)[list(PANELS)].agg(["mean", "std"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", type=Path)
    p.add_argument("--classes", required=True, help="comma-separated target class names")
    p.add_argument("--training-free", type=Path, help="the same sets' training-free study")
    p.add_argument("--size", type=int, help="the target size to read (several in the study)")
    p.add_argument("--plot", type=Path)
    args = p.parse_args(argv)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]

    from fidelity_common import line_panels

    stats = pooled(steps_frame(args.study, classes, args.size))
    free = (pooled(steps_frame(args.training_free, classes, args.size))
            if args.training_free else None)
    methods = list(dict.fromkeys(stats.index.get_level_values(0)))
    panels = []
    for key, (title, scale) in PANELS.items():
        series = [{"label": m, "colour": i,
                   "x": list(stats.loc[m].index),
                   "y": list(stats.loc[m][(key, "mean")] * scale)}
                  for i, m in enumerate(methods)]
        hlines = []
        if free is not None:   # the finetuned methods' starts, in their colours
            for m in dict.fromkeys(free.index.get_level_values(0)):
                if m in methods:
                    hlines.append({"y": float(free.loc[m][(key, "mean")].iloc[0] * scale),
                                   "colour": methods.index(m), "label": None})
        panels.append({"title": title, "series": series, "hlines": hlines})
    if args.plot:
        print(f"[plot] {line_panels(panels, args.plot)}")

    def cell(row: pd.Series, key: str) -> str:
        scale = PANELS[key][1]
        mean, std = row[(key, "mean")] * scale, row[(key, "std")] * scale
        return f"{mean:.1f}" if pd.isna(std) else f"{mean:.1f} ± {std:.1f}"

    print("| run | iteration | " + " | ".join(t for t, _ in PANELS.values()) + " |")
    print("|---|---:|" + "---:|" * len(PANELS))
    if free is not None:
        for m in dict.fromkeys(free.index.get_level_values(0)):
            row = free.loc[m].iloc[0]
            print(f"| {m}, training-free | 0 | "
                  + " | ".join(cell(row, k) for k in PANELS) + " |")
    for m in methods:
        it = stats.loc[m].index[-1]
        print(f"| {m} | {it} | " + " | ".join(cell(stats.loc[m].iloc[-1], k) for k in PANELS)
              + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

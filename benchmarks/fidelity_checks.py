"""The fidelity checks (a)-(c) over seeds, from a finetuned study and its training-free twin,
or from the rows of `benchmarks/fidelity_finetune.py`.

Reads either two study folders written by `harness.run` (through
`harness.analysis.load_study`):

* FINETUNED: e.g. `studies/dataset_size.yaml --set 'seeds=[0,1,2]'` (a CAT method and a
  random-A method, several sizes and seeds);
* TRAINING_FREE: `studies/training_free.yaml` with the same sizes, seeds and affinities;

or, with `--rows`, the JSON-lines files of `fidelity_finetune.py` runs (one target, source and
variant; the combination is CAT, random is random A; each run's training-free evaluation
gives the training-free roles and its last evaluation the finetuned ones). Mean ± std over
seeds as the study tables compute them (`harness.analysis.build_table`).

and prints, per size, mean ± std over seeds of FID, KID×10³ and mIoU for each, and whether

* (a) finetuned CAT beats training-free CAT and finetuned random A on every metric with the
  ±1 std intervals apart (lower FID / KID, higher mIoU);
* (b) random A's FID falls with size, and CAT's FID gain over random A is larger at the
  smallest size than at the largest;
* (c) training-free CAT's mIoU is ≥ 3× training-free random's.

    python benchmarks/fidelity_checks.py FINETUNED_DIR TRAINING_FREE_DIR \\
        [--cat cat-combination] [--random no-cat] [--free-cat cat-combination] \\
        [--free-random cat-random] [--more-finetuned DIR …] [--json OUT.json]
    python benchmarks/fidelity_checks.py --rows RUNS.jsonl … [--cat-rows RERUN.jsonl …] \\
        [--at ITERATION | --window] [--json OUT.json]

`--at N` reads the finetuned runs at iteration N instead of their last evaluation; `--window`
prints check (a) at every evaluation the runs share (is there a budget where it holds?).
"""

from __future__ import annotations

import argparse
import json
from itertools import pairwise
from pathlib import Path

import pandas as pd

from harness.analysis import build_table, load_study
from harness.analysis.metrics import MetricSpec, metric_spec

CHECKED = ("fid", "kid", "miou")   # metric registry names (harness.analysis.metrics)


def output_label(spec: MetricSpec) -> str:
    """The metric's name in this script's output: its table label, "%" when shown ×100."""
    return f"{spec.label} %" if spec.scale == 100.0 else spec.label


def summary(study_dir: Path | list[Path], methods: dict[str, str]) -> pd.DataFrame:
    """Mean and std over seeds per (role, size, metric); `methods` maps role -> method label.

    Several study folders pool their trials (e.g. seed 0 from the main job, seeds 1 and 2 run
    as a second study with the same settings); a (method, size, seed) found in two of them is
    refused, so no run counts twice."""
    dirs = study_dir if isinstance(study_dir, list) else [study_dir]
    final = pd.concat([load_study(d).final for d in dirs], ignore_index=True)
    final = final[final["status"] == "complete"]
    return summary_of(final, methods, ", ".join(map(str, dirs)))


def summary_of(final: pd.DataFrame, methods: dict[str, str], where: str) -> pd.DataFrame:
    """`summary` of one frame of finished runs (method, target_size, seed and the metrics)."""
    twice = final[final.duplicated(["method", "target_size", "seed"], keep=False)]
    if not twice.empty:
        key = twice.iloc[0]
        raise SystemExit(f"{where}: method {key['method']!r}, size {key['target_size']}, "
                         f"seed {key['seed']} is in more than one folder")
    table = build_table(final, rows=["method", "target_size"], metrics=list(CHECKED),
                        group_by=None)
    rows = []
    for role, label in methods.items():
        found = [i for i, key in enumerate(table.rows) if key["method"] == label]
        if not found:
            raise SystemExit(f"{where}: no finished trial of method {label!r} "
                             f"(methods there: {sorted(final['method'].unique())})")
        for i in found:
            for spec in table.metrics:
                cell = table.cells[(i, "", spec.name)]
                rows.append({"role": role, "size": int(table.rows[i]["target_size"]),
                             "metric": output_label(spec), "mean": cell.mean,
                             "std": cell.std if cell.n > 1 else 0.0, "n": cell.n})
    return pd.DataFrame(rows)


# fidelity_finetune.py's affinities in each role: (affinity, training-free?)
ROW_ROLES = {"cat": ("combination", False), "random": ("random", False),
             "free_cat": ("combination", True), "free_random": ("random", True)}


def rows_frame(paths: list[Path], cat_paths: list[Path] | None = None
               ) -> tuple[pd.DataFrame, str]:
    """The `fidelity_finetune.py` rows of these files as one frame (`seed_frame`), with the
    files' names for messages. The files must hold one experiment (target, source, variant,
    FreezeD depth): the checks compare like with like. `cat_paths`: CAT's rows (training-free
    and finetuned) come from these files instead, e.g. a rerun of the combination with another
    matrix; their variant may differ, the rest of the setting may not."""
    import fidelity_plots as ff  # a sibling module (benchmarks/ is on the path)

    def read(files: list[Path]) -> pd.DataFrame:
        where = ", ".join(map(str, files))
        rows = [json.loads(line) for p in files for line in p.read_text().splitlines()
                if line.strip()]
        if not rows:
            raise SystemExit(f"{where}: no rows")
        return ff.seed_frame(rows)

    where = ", ".join(map(str, [*paths, *(cat_paths or [])]))
    frame = read(paths)
    setting = [c for c in ff.GROUP if c not in ("affinity", "target_size")]
    if cat_paths:
        cat = read(cat_paths)
        cat = cat[cat.affinity == "combination"]
        frame = pd.concat([frame[frame.affinity != "combination"], cat], ignore_index=True)
        setting.remove("variant")
    kinds = frame[setting].astype(str).drop_duplicates()
    if len(kinds) > 1:
        raise SystemExit(f"{where}: rows of more than one experiment "
                         f"({', '.join(setting)}): {kinds.values.tolist()}; pass one")
    return frame, where


def rows_summary(paths: list[Path], cat_paths: list[Path] | None = None,
                 at: int | None = None) -> pd.DataFrame:
    """`summary` of `fidelity_finetune.py` rows (`rows_frame`): the combination's and random
    A's last evaluation (finetuned; with `at`, their evaluation at iteration `at` instead: the
    checks as a shorter budget would have left them) and their training-free one (iteration
    -1), per size, over seeds."""
    return frame_summary(*rows_frame(paths, cat_paths), at)


def frame_summary(frame: pd.DataFrame, where: str, at: int | None = None) -> pd.DataFrame:
    """`rows_summary` of a frame `rows_frame` read."""
    parts = []
    for role, (affinity, free) in ROW_ROLES.items():
        runs = frame[frame.affinity == affinity]
        if runs.empty:
            raise SystemExit(f"{where}: no {affinity!r} rows (affinities there: "
                             f"{sorted(frame.affinity.unique())})")
        last = runs.groupby(["target_size", "seed"])["iteration"].transform("max")
        if not free and at is not None:
            evaluated = runs.groupby(["target_size", "seed"])["iteration"].agg(set)
            missing = [key for key, its in evaluated.items() if at not in its]
            if missing:
                size, seed = missing[0]
                raise SystemExit(f"{where}: the {affinity!r} run of size {size}, seed {seed} "
                                 f"was not evaluated at iteration {at} (it was at "
                                 f"{sorted(i for i in evaluated[missing[0]] if i >= 0)})")
            last = at
        pick = runs[runs.iteration == (-1 if free else last)]
        parts.append(pick.assign(method=role))
    picked = pd.concat(parts, ignore_index=True)
    # the sizes every role has (a CAT rerun may cover fewer sizes than random A's rows)
    common = set.intersection(*(set(p.target_size) for p in parts))
    return summary_of(picked[picked.target_size.isin(common)], {r: r for r in ROW_ROLES}, where)


def better_apart(a: pd.Series, b: pd.Series, mode: str) -> bool:
    """a beats b with the mean ± std intervals not overlapping."""
    if mode == "min":
        return a["mean"] + a["std"] < b["mean"] - b["std"]
    return a["mean"] - a["std"] > b["mean"] + b["std"]


DIRECTIONS = {output_label(metric_spec(m)): metric_spec(m).direction for m in CHECKED}
FID, MIOU = output_label(metric_spec("fid")), output_label(metric_spec("miou"))


def checks(table: pd.DataFrame) -> dict:
    def cell(role: str, size: int, metric: str) -> pd.Series:
        return table[(table.role == role) & (table["size"] == size)
                     & (table.metric == metric)].iloc[0]

    sizes = [int(s) for s in sorted(table["size"].unique())]
    out: dict = {"a": {}, "b": {}, "c": {}}
    for size in sizes:
        out["a"][size] = {
            name: {"vs_training_free": bool(better_apart(cell("cat", size, name),
                                                         cell("free_cat", size, name), mode)),
                   "vs_random": bool(better_apart(cell("cat", size, name),
                                                  cell("random", size, name), mode))}
            for name, mode in DIRECTIONS.items()}
        free_cat, free_rand = (cell("free_cat", size, MIOU)["mean"],
                               cell("free_random", size, MIOU)["mean"])
        out["c"][size] = {"ratio": free_cat / free_rand, "holds": bool(free_cat >= 3 * free_rand)}
    rand_fid = [cell("random", s, FID)["mean"] for s in sizes]
    gain = {s: cell("random", s, FID)["mean"] - cell("cat", s, FID)["mean"] for s in sizes}
    out["b"] = {"random_fid": dict(zip(sizes, rand_fid, strict=True)),
                "random_falls": bool(all(x > y for x, y in pairwise(rand_fid))),
                "random_first_above_last": bool(rand_fid[0] > rand_fid[-1]),
                "cat_gain": gain, "gain_larger_at_smallest": bool(gain[sizes[0]] > gain[sizes[-1]])}
    return out


def common_evaluations(paths: list[Path], cat_paths: list[Path] | None = None) -> list[int]:
    """The finetuning iterations (> 0) at which every run the checks read was evaluated."""
    return frame_evaluations(rows_frame(paths, cat_paths)[0])


def frame_evaluations(frame: pd.DataFrame) -> list[int]:
    """`common_evaluations` of a frame `rows_frame` read."""
    import fidelity_plots as ff

    per_run = frame[frame.iteration > 0].groupby(
        [*ff.group_columns(frame), "seed"], dropna=False)["iteration"].agg(set)
    return sorted(set.intersection(*per_run)) if len(per_run) else []


def window(paths: list[Path], cat_paths: list[Path] | None = None) -> pd.DataFrame:
    """Check (a) at every evaluation the runs share, as if training had stopped there: per
    iteration and size, how many of the three metrics CAT wins with the intervals apart
    against its training-free start and against random A, and whether (a) holds in full.
    The files are read once."""
    frame, where = rows_frame(paths, cat_paths)
    out = []
    for it in frame_evaluations(frame):
        result = checks(frame_summary(frame, where, at=it))
        for size, per_metric in result["a"].items():
            free = sum(v["vs_training_free"] for v in per_metric.values())
            rand = sum(v["vs_random"] for v in per_metric.values())
            out.append({"iteration": it, "size": size, "vs_training_free": free,
                        "vs_random": rand, "of": len(per_metric),
                        "holds": free == rand == len(per_metric),
                        "cat_gain_fid": result["b"]["cat_gain"][size]})
    return pd.DataFrame(out)


def window_markdown(frame: pd.DataFrame) -> str:
    """`window` as a table: one row per iteration, per size "t/r" = metrics won with the
    intervals apart against training-free CAT / random A (of three), ✓ where (a) holds."""
    sizes = sorted(frame["size"].unique())
    lines = ["| iteration | " + " | ".join(f"size {s}" for s in sizes) + " |",
             "|---:|" + "---|" * len(sizes)]
    for it, part in frame.groupby("iteration"):
        cells = []
        for s in sizes:
            r = part[part["size"] == s].iloc[0]
            mark = " ✓" if r["holds"] else ""
            cells.append(f"{r['vs_training_free']}/{r['vs_random']}{mark} "
                         f"({r['cat_gain_fid']:+.1f})")
        lines.append(f"| {it} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(result: dict) -> str:
    """One line per check and size: which parts hold (the JSON has the numbers)."""
    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    lines = []
    for size, per_metric in result["a"].items():
        for other in ("vs_training_free", "vs_random"):
            parts = ", ".join(f"{m} {yes(v[other])}" for m, v in per_metric.items())
            lines.append(f"(a) size {size}, {other.replace('_', ' ')}: {parts}")
    b = result["b"]
    gains = " / ".join(f"{g:+.1f}" for g in b["cat_gain"].values())
    lines.append(f"(b) random A's FID falls with size: {yes(b['random_falls'])}; CAT's FID gain "
                 f"over random A ({gains}) larger at the smallest size: "
                 f"{yes(b['gain_larger_at_smallest'])}")
    lines += [f"(c) size {size}: training-free combination mIoU {c['ratio']:.1f}× random's: "
              f"{yes(c['holds'])}" for size, c in result["c"].items()]
    return "\n".join(lines)


def markdown(table: pd.DataFrame) -> str:
    roles = ["free_random", "free_cat", "random", "cat"]
    head = "| size | " + " | ".join(roles) + " |\n|---:|" + "---|" * len(roles)
    lines = [head]
    for size in sorted(table["size"].unique()):
        cells = []
        for role in roles:
            part = table[(table.role == role) & (table["size"] == size)]
            cells.append(" / ".join(f"{r['mean']:.1f} ± {r['std']:.1f}"
                                    for _, r in part.iterrows()))
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("finetuned", type=Path, nargs="?")
    ap.add_argument("--more-finetuned", type=Path, action="append", default=[],
                    help="another finetuned study folder whose trials pool with FINETUNED "
                         "(other seeds, same settings); repeatable")
    ap.add_argument("training_free", type=Path, nargs="?")
    ap.add_argument("--rows", type=Path, nargs="+",
                    help="fidelity_finetune.py JSON-lines files instead of two study folders")
    ap.add_argument("--cat-rows", type=Path, nargs="+",
                    help="with --rows: CAT's (combination) rows from these files instead")
    ap.add_argument("--cat", default="cat-combination")
    ap.add_argument("--random", default="no-cat")
    ap.add_argument("--free-cat", default="cat-combination")
    ap.add_argument("--free-random", default="cat-random")
    ap.add_argument("--at", type=int,
                    help="with --rows: the finetuned runs' evaluation at this iteration "
                         "instead of their last (the checks as that budget would leave them)")
    ap.add_argument("--window", action="store_true",
                    help="with --rows: check (a) at every evaluation the runs share, one "
                         "table row per iteration: is there a budget where it holds?")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if bool(args.rows) == bool(args.finetuned and args.training_free):
        ap.error("give either FINETUNED and TRAINING_FREE study folders or --rows FILES")
    if (args.at is not None or args.window) and not args.rows:
        ap.error("--at and --window read --rows files")
    if args.window:
        frame = window(args.rows, args.cat_rows)
        print("Check (a) by iteration: per size, metrics (of FID, KID, mIoU) CAT wins with "
              "the ±1 std intervals apart against training-free CAT / random A, ✓ where "
              "(a) holds in full, (CAT's FID gain over random A)\n")
        print(window_markdown(frame))
        if args.json:
            args.json.write_text(json.dumps(frame.to_dict("records"), indent=1, default=str))
        return
    if args.rows:
        table = rows_summary(args.rows, args.cat_rows, args.at)
    else:
        table = pd.concat([summary([args.finetuned, *args.more_finetuned],
                                   {"cat": args.cat, "random": args.random}),
                           summary(args.training_free, {"free_cat": args.free_cat,
                                                        "free_random": args.free_random})])
    result = checks(table)
    print("FID / KID×10³ / mIoU %, mean ± std over seeds (n = "
          f"{int(table['n'].min())}–{int(table['n'].max())})\n")
    print(markdown(table))
    print("\n" + verdicts(result))
    print("\n" + json.dumps(result, indent=1, default=str))
    if args.json:
        args.json.write_text(json.dumps({"table": table.to_dict("records"), "checks": result},
                                        indent=1, default=str))


if __name__ == "__main__":
    main()

"""Wall time of `python -m harness.run STUDY --dry-run`, a whole process, for every shipped
study: the edit-check loop of writing a study (validate the YAML, print the plan, run the
input checks). Prints a markdown table of median / min / max seconds over `--repeats`.

    python benchmarks/dry_run_time.py [--repeats 5] [--old TREE] [--study NAME ...]

`--old TREE`: another checkout (with its own .venv) timed side by side, its runs interleaved
with this tree's so both see the same machine load; the table then has both and their ratio.
The stage cache is $CAT_HARNESS_CACHE (a warm cache: the benchmark drawn, stages built, as
when a study is edited and checked again). One run per study and tree before the timed ones
warms the file cache and is not counted.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="timed runs per study and tree")
    p.add_argument("--old", type=Path, default=None,
                   help="another checkout to time side by side (its .venv/bin/python)")
    p.add_argument("--study", action="append", default=None,
                   help="study name(s) under studies/ (default: every shipped study)")
    return p.parse_args(argv)


def time_dry_run(tree: Path, study: str, out: Path) -> float:
    """Seconds of one `--dry-run` process of `study` in checkout `tree`; fails loudly."""
    python = tree / ".venv" / "bin" / "python"
    start = time.perf_counter()
    proc = subprocess.run([str(python), "-m", "harness.run", f"studies/{study}.yaml",
                           "--dry-run", "--output", str(out)], cwd=tree,
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: {study}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return seconds


def summary(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} ({min(times):.2f}–{max(times):.2f})"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    studies = args.study or sorted(p.stem for p in (REPO / "studies").glob("*.yaml"))
    trees = {"new": REPO} if args.old is None else {"old": args.old.resolve(), "new": REPO}
    times: dict[tuple[str, str], list[float]] = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for study in studies:
            for name, tree in trees.items():
                time_dry_run(tree, study, Path(tmp))                      # warm-up
            for _ in range(args.repeats):
                for name, tree in trees.items():                          # interleaved
                    times.setdefault((study, name), []).append(
                        time_dry_run(tree, study, Path(tmp)))
            print(f"[bench] {study}: " + ", ".join(
                f"{n} {statistics.median(times[(study, n)]):.2f} s" for n in trees),
                file=sys.stderr)
    load_after = os.getloadavg()

    versions = ", ".join(f"{pkg} {metadata.version(pkg)}" for pkg in ("torch", "ray"))
    print(f"Python {platform.python_version()}, {versions}; {os.cpu_count()} CPUs; "
          f"{args.repeats} timed runs per study and tree (median (min–max) seconds, whole "
          f"process); load average (1 min) {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after\n")
    header = [f"{n} (s)" for n in trees] + (["old / new"] if len(trees) == 2 else [])
    print("| study | " + " | ".join(header) + " |")
    print("|---|" + "---|" * len(header))
    medians = {n: [] for n in trees}
    for study in studies:
        cells = [summary(times[(study, n)]) for n in trees]
        for n in trees:
            medians[n].append(statistics.median(times[(study, n)]))
        if len(trees) == 2:
            cells.append(f"{medians['old'][-1] / medians['new'][-1]:.1f}×")
        print(f"| {study} | " + " | ".join(cells) + " |")
    overall = [f"{statistics.median(medians[n]):.2f}" for n in trees]
    if len(trees) == 2:
        overall.append(f"{statistics.median(medians['old']) / statistics.median(medians['new']):.1f}×")
    print("| **median of the studies** | " + " | ".join(overall) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

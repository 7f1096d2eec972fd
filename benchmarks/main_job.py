"""Time the main job cold (empty cache) and warm (everything cached); print a Markdown row.

    python benchmarks/main_job.py [--study studies/dataset_size.yaml] [--workdir /tmp/mainjob]

Cold: a fresh cache and output folder, so every stage is built (benchmark drawing, source
pretraining, segmenters, statistics, affinities) and every trial runs. Warm: the same command
again: the stages come from the cache and the finished trials are reused (same study, same
artifacts), so only the analysis is redone. The table is printed from the analysis folder.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path


def run(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--study", default="studies/dataset_size.yaml")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/cat-mainjob"))
    args = p.parse_args()
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    cache, out = args.workdir / "cache", args.workdir / "outputs"
    base = [sys.executable, "-m", "harness.run", args.study, "--set", f"cache_dir={cache}",
            "--output", str(out)]
    cold = run(base)
    warm = run(base)
    name = next(out.iterdir()).name
    table = out / name / "analysis" / "tables" / "main.md"
    print(f"\n| run | minutes |\n|---|---:|\n| cold (empty cache) | {cold / 60:.1f} |\n"
          f"| warm (everything cached) | {warm / 60:.1f} |\n")
    if table.is_file():
        print(table.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

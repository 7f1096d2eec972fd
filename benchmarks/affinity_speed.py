"""Speed of the affinity estimators (issue #3 targets), on this machine's CPU.

    python benchmarks/affinity_speed.py [--threads 2]

1. text, COCO-Stuff (182) -> ADE20K (150), default offline backend, in a fresh process:
   wall time of the whole `python -m cat_models.affinity` run (imports + model load + encode)
   and the in-process time of `text_affinity` (model load + encode). Target < 10 s.
2. segmentation affinity over 100 target images of the embedded benchmark at 64×64, with the
   harness's small segmenter (cat_models.segmenters) trained for a few iterations. Target < 60 s.
3. feature affinity (default Inception mixed_7 @128), 100 target + 100 / 200 source images at
   64×64. Target < 60 s.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def text_fresh_process(out: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cat_models.affinity", "--source", "coco_stuff",
                    "--target", "ade20k", "--method", "text", "--out", str(out)],
                   check=True, capture_output=True)
    return time.perf_counter() - start


def text_in_process() -> float:
    code = ("import time, cat_models.data as d; t = time.perf_counter();"
            "from cat_models.affinity import text_affinity;"
            "text_affinity(d.packaged_class_names('coco_stuff'), d.packaged_class_names('ade20k'));"
            "print(time.perf_counter() - t)")
    return float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True).stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--segmenter-iterations", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from cat_models.affinity import feature_affinity, segmentation_affinity
    from cat_models.data import open_dataset
    from cat_models.data.synthetic import ensure_benchmark

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(("text coco_stuff->ade20k, fresh `python -m` process", text_fresh_process(
            Path(tmp) / "A.npy"), 10))
    rows.append(("text coco_stuff->ade20k, import + load + encode in process",
                 text_in_process(), 10))

    bench = ensure_benchmark(resolution=64, seed=0, n_source=2000, n_target=1000)
    source = open_dataset("folder", bench.source_root, "train", resolution=64)
    target = open_dataset("folder", bench.target_root, "train", resolution=64)
    for n_source in (100, 200):
        start = time.perf_counter()
        feature_affinity(source, target, max_source_images=n_source, max_target_images=100)
        rows.append((f"features (inception mixed_7@128), 100 target + {n_source} source",
                     time.perf_counter() - start, 60))

    from cat_models.segmenters import train_small_segmenter

    segmenter = train_small_segmenter(source, iterations=args.segmenter_iterations, seed=0)
    start = time.perf_counter()
    segmentation_affinity(segmenter, target, max_images=100)
    rows.append(("segmentation (SmallSegmenter), 100 target images",
                 time.perf_counter() - start, 60))

    print(f"torch threads: {args.threads}\n")
    print("| measurement | seconds | target |\n|---|---:|---:|")
    for name, seconds, target_s in rows:
        print(f"| {name} | {seconds:.1f} | < {target_s} |")


if __name__ == "__main__":
    main()

"""FID feature throughput: in-memory pipeline vs raw Inception forward vs clean-fid's folder
pipeline, on the same images (issue #5). Also the cost of the Fréchet distance itself.

    python benchmarks/metrics_fid_throughput.py [--images 32] [--threads 2] [--rounds 2]

raw: the feature net on already-resized 299x299 tensors (the lower bound on cost).
in-memory: `cat_models.metrics.inception_features` on [-1, 1] tensors (quantise + clean
resize + net). folder: `cleanfid.fid.get_folder_features` on the same images saved as PNG
(decode + clean resize + net; writing the PNGs is not counted), with num_workers=0 and with
clean-fid's default num_workers=12; "tensors -> PNG -> folder" also counts writing the PNGs,
which is what a trial holding generated tensors would pay. Best of `rounds`, interleaved.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from cleanfid import fid as cleanfid

    from cat_models.data import open_dataset
    from cat_models.data.synthetic import ensure_benchmark
    from cat_models.metrics import (
        FeatureStats,
        clean_resize,
        fid_from_features,
        inception_features,
        load_feature_net,
        quantise,
    )

    bench = ensure_benchmark(resolution=args.resolution)
    val = open_dataset("folder", bench.target_root, "val", resolution=args.resolution)
    images = torch.stack([val[i]["image"] for i in range(args.images)])
    net = load_feature_net()
    resized = clean_resize(quantise(images))
    workdir = Path(tempfile.mkdtemp(prefix="fid_bench_"))
    for i, img in enumerate(quantise(images)):
        Image.fromarray(img).save(workdir / f"{i:04d}.png")
    net(resized[:2])  # warm-up: TorchScript profiling runs

    def raw():
        return np.concatenate([net(b).numpy() for b in resized.split(args.batch_size)])

    def memory():
        return inception_features(images, net, args.batch_size)

    def folder(directory: Path = workdir, workers: int = 0):
        return cleanfid.get_folder_features(str(directory), net, num_workers=workers,
                                            batch_size=args.batch_size,
                                            device=torch.device("cpu"), mode="clean",
                                            verbose=False)

    def folder_from_tensors():
        # what a trial would pay to use the folder route: write its tensors as PNGs first
        out = Path(tempfile.mkdtemp(prefix="fid_bench_gen_"))
        for i, img in enumerate(quantise(images)):
            Image.fromarray(img).save(out / f"{i:04d}.png")
        return folder(out)

    pipelines = {"raw Inception forward": raw, "in-memory pipeline": memory,
                 "clean-fid folder pipeline": folder,
                 "clean-fid folder pipeline, num_workers=12 (its default)":
                     lambda: folder(workers=12),
                 "tensors -> PNG -> clean-fid folder pipeline": folder_from_tensors}
    best = {name: float("inf") for name in pipelines}
    feats = {}
    for _ in range(args.rounds):
        for name, fn in pipelines.items():
            start = time.perf_counter()
            feats[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    rate = {name: args.images / t for name, t in best.items()}
    raw_rate = rate["raw Inception forward"]
    max_diff = float(np.abs(feats["in-memory pipeline"] - feats["clean-fid folder pipeline"]).max())

    half = args.images // 2
    gen, ref = feats["in-memory pipeline"][:half], FeatureStats.from_features(
        feats["in-memory pipeline"][half:], net.identifier)
    timings = {}
    for method in ("low_rank", "cleanfid"):
        start = time.perf_counter()
        value = fid_from_features(gen, ref, method=method)
        timings[method] = (time.perf_counter() - start, value)

    print(f"{args.images} images {args.resolution}px, {args.threads} threads, "
          f"batch {args.batch_size}, net {net.identifier}")
    print("| pipeline | images/s | x raw |")
    print("|---|---|---|")
    for name in pipelines:
        print(f"| {name} | {rate[name]:.2f} | {rate[name] / raw_rate:.2f} |")
    print(f"in-memory / folder: {rate['in-memory pipeline'] / rate['clean-fid folder pipeline']:.2f}x;"
          f" max |feature difference| in-memory vs folder: {max_diff:.2e}")
    for method, (seconds, value) in timings.items():
        print(f"Fréchet distance ({method}): {seconds:.3f} s, FID {value:.4f}")
    if args.json:
        args.json.write_text(json.dumps({
            "images": args.images, "threads": args.threads, "images_per_s": rate,
            "max_feature_diff": max_diff,
            "frechet_s": {m: t for m, (t, _) in timings.items()},
            "frechet_value": {m: v for m, (_, v) in timings.items()}}, indent=2))


if __name__ == "__main__":
    main()

"""Are the pretrained source model's samples recognisable? (issue #4)

    python benchmarks/source_quality.py --checkpoint SOURCE.pt --segmenter SEG.pt \
        [--data-root DIR] [--resolution 32] [--grid docs/images/source_samples.png]

Compares the source generator (EMA) with a freshly initialised one of the same config on the
source validation split: FID / KID against the real validation images, and the mIoU that a
segmenter trained on real source images gets on the generated images (high = each class is
drawn with the look of that class). Writes a sample grid (label map | real | generated).
Defaults find the embedded benchmark; the harness prints the checkpoint and segmenter paths of
its `source-model` and `segmenter-source` stages.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> int:
    from cat_models.data import open_dataset
    from cat_models.data.synthetic import ensure_benchmark
    from cat_models.metrics.evaluator import Evaluator
    from cat_models.oasis.baselines import build_plan
    from cat_models.oasis.sampling import sample_images
    from cat_models.oasis.source import load_source
    from cat_models.segmenters import load_segmenter
    from harness.trial import sample_grid, save_grid

    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--segmenter", type=Path, required=True)
    p.add_argument("--data-root", type=Path)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--n", type=int, default=96)
    p.add_argument("--grid", type=Path, default=Path("docs/images/source_samples.png"))
    args = p.parse_args()
    torch.set_num_threads(1)
    root = args.data_root or ensure_benchmark(None, 64, 0, 1200, 600).source_root
    val = open_dataset("folder", root, "val", args.resolution)
    source = load_source(args.checkpoint)
    fresh = build_plan("scratch", None, None, val.num_classes, cfg=source.cfg, seed=0).generator
    evaluator = Evaluator(val, val, load_segmenter(args.segmenter), n_samples=args.n)
    rows = []
    for name, g in (("pretrained source (EMA)", source.ema), ("random init", fresh)):
        m = evaluator.evaluate(lambda labels, g=g: sample_images(g, labels, seed=0))
        rows.append((name, m["fid"], m["kid"], m["miou"]))
    real = evaluator.segmenter
    labels = torch.stack([torch.as_tensor(val[i]["label"]) for i in range(8)])
    images = torch.stack([torch.as_tensor(val[i]["image"]) for i in range(8)])
    with torch.no_grad():
        pred = real.predict(images)
    real_acc = float((pred == labels)[labels > 0].float().mean())
    save_grid(args.grid, sample_grid(labels, images, sample_images(source.ema, labels, seed=0),
                                     val.num_classes), scale=3)
    print(f"source validation split: {len(val)} images at {args.resolution}px; "
          f"segmenter pixel accuracy on real images {real_acc:.1%}\n")
    print("| generator | FID ↓ | KID ↓ | mIoU of a real-image segmenter ↑ |")
    print("|---|---:|---:|---:|")
    for name, fid, kid, miou in rows:
        print(f"| {name} | {fid:.1f} | {kid:.3f} | {miou:.1%} |")
    print(f"\nsample grid: {args.grid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

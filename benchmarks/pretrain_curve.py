"""How fast does source pretraining make classes recognisable? (issue #4)

    python benchmarks/pretrain_curve.py --segmenter SEG.pt [--iterations 1500] [--eval-every 250]
        [--preset bench32] [--set lr_g=1e-4 --set lr_d=4e-4 ...] [--data-root DIR] [--seed 0]

Pretrains OASIS on the source training split (the embedded benchmark's by default) and, every
`--eval-every` steps, scores the EMA generator the way `source_quality.py` does without the
FID: the mIoU a segmenter trained on real source images finds in samples drawn for the first
`--n` validation label maps. Prints one JSON line per evaluation and a markdown row at the end.
`--set` replaces preset fields (OasisConfig names), e.g. OASIS's own learning rates.
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from pathlib import Path

import torch


def main() -> int:
    from cat_models.data import open_dataset
    from cat_models.data.synthetic import ensure_benchmark
    from cat_models.metrics.miou import miou
    from cat_models.oasis.baselines import build_plan
    from cat_models.oasis.config import PRESETS, preset
    from cat_models.oasis.sampling import sample_images
    from cat_models.oasis.train import train_oasis
    from cat_models.segmenters import load_segmenter

    p = argparse.ArgumentParser()
    p.add_argument("--segmenter", type=Path, required=True,
                   help="a segmenter trained on real source images (stage segmenter-source)")
    p.add_argument("--iterations", type=int, default=1500)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--preset", default="bench32", choices=sorted(PRESETS))
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--data-root", type=Path)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--n", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = ast.literal_eval(value)
    cfg = preset(args.preset, resolution=(args.resolution, args.resolution), **overrides)
    root = args.data_root or ensure_benchmark(None, 64, 0, 1200, 600).source_root
    train = open_dataset("folder", root, "train", args.resolution, augment=True)
    val = open_dataset("folder", root, "val", args.resolution)
    segmenter = load_segmenter(args.segmenter)
    n = min(args.n, len(val))
    labels = torch.stack([torch.as_tensor(val[i]["label"]) for i in range(n)]).long()

    def evaluate(ema, step):
        with torch.no_grad():
            predicted = segmenter.predict(sample_images(ema, labels, seed=0))
        return {"miou": miou(predicted, labels, val.num_classes)["miou"]}

    start = time.perf_counter()
    curve = []

    def report(r):
        if "miou" in r:
            curve.append((r["iteration"], r["miou"]))
            print(json.dumps({"iteration": r["iteration"], "miou": round(r["miou"], 4),
                              "seconds": round(time.perf_counter() - start)}), flush=True)

    plan = build_plan("scratch", None, None, train.num_classes, cfg=cfg, seed=args.seed)
    train_oasis(plan, train, cfg, args.iterations, seed=args.seed, on_report=report,
                report_every=0, evaluate_fn=evaluate, eval_every=args.eval_every)
    print(f"\nlr_g {cfg.lr_g:g}, lr_d {cfg.lr_d:g}, batch {cfg.batch_size}, seed {args.seed}")
    print("| " + " | ".join(f"{it:,}" for it, _ in curve) + " |")
    print("|" + "---:|" * len(curve))
    print("| " + " | ".join(f"{m:.1%}" for _, m in curve) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

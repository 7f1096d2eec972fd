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
import json
import time

import torch
from source_curve import add_curve_arguments, evaluation_data, parse_pairs, print_curve


def main() -> int:
    from cat_models.metrics.miou import miou
    from cat_models.oasis.baselines import build_plan
    from cat_models.oasis.config import PRESETS, preset
    from cat_models.oasis.sampling import sample_images
    from cat_models.oasis.train import train_oasis

    p = argparse.ArgumentParser()
    add_curve_arguments(p, n=96, threads=1)
    p.add_argument("--preset", default="bench32", choices=sorted(PRESETS))
    p.add_argument("--resolution", type=int, default=32)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = preset(args.preset, resolution=(args.resolution, args.resolution),
                 **parse_pairs(args.set))
    train, val, segmenter, labels = evaluation_data(args, args.resolution)

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
    print_curve(curve)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

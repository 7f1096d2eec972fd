"""Which non-negativity / temperature makes the text affinity useful? (issue #13, 3)

    python benchmarks/fidelity_text.py --cache /work/cache [--size 50 --seed 0] --out FILE.json

For each setting of `normalise_columns` applied to the text cosines (MiniLM, the shipped
default backend): the column sharpness (mean top weight; 1 / C_S is uniform), the top-1
agreement with the benchmark's known correspondences (`GROUND_TRUTH`, 8 target classes), and
the training-free FID / KID / mIoU of the source model behind A (paper Table 3), beside the
random A of seeds 0-2 and the real-data floor. Text does not look at images, so the few-shot
set does not enter; `--size/--seed` only select the bench the evaluator is built for.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

SETTINGS = [
    {"nonnegativity": "clip"},
    {"nonnegativity": "center"},
    {"nonnegativity": "softmax", "temperature": 0.1},
    {"nonnegativity": "softmax", "temperature": 0.05},
    {"nonnegativity": "softmax", "temperature": 0.02},
    {"nonnegativity": "clip", "top_k": 1},
]


def main() -> int:
    from fidelity_common import Bench

    from cat_models.affinity.text import text_affinity
    from cat_models.data.synthetic import GROUND_TRUTH
    from cat_models.oasis.transfer import random_affinity

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", type=Path, default=Path("/work/cache"))
    p.add_argument("--size", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    bench = Bench(args.cache, args.size, args.seed)
    src, tgt = bench.source_train.class_names, bench.test.class_names
    rows = []
    for seed in (0, 1, 2):
        a = random_affinity(len(src), len(tgt), seed)
        rows.append({"setting": f"random (seed {seed})", "top1": None,
                     "sharpness": float(a.max(0).mean()), **bench.training_free(a)})
        print(rows[-1], flush=True)
    for setting in SETTINGS:
        a = text_affinity(src, tgt, **setting)
        hits, counted = a.top1_agreement(GROUND_TRUTH)
        rows.append({"setting": ", ".join(f"{k}={v}" for k, v in setting.items()),
                     "top1": f"{hits}/{counted}", "sharpness": float(a.values.max(0).mean()),
                     **bench.training_free(a)})
        print(rows[-1], flush=True)
    floor = bench.evaluator.floor
    args.out.write_text(json.dumps({"floor": floor, "rows": rows}, indent=1))
    print(f"\nreal-data floor (n={floor['n_floor']}): FID {floor['fid_floor']:.1f}, KID "
          f"{floor['kid_floor']:.4f} ± {floor['kid_floor_std']:.4f}\n")
    print("| text A | top-1 | mean top weight | FID ↓ | KID ↓ | mIoU ↑ |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setting']} | {r['top1'] or '–'} | {r['sharpness']:.3f} | {r['fid']:.1f} "
              f"| {r['kid']:.4f} ± {r['kid_std']:.4f} | {100 * r['miou']:.1f} |")
    rand = [r["fid"] for r in rows[:3]]
    print(f"\nrandom: FID {np.mean(rand):.1f} ± {np.std(rand, ddof=1):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

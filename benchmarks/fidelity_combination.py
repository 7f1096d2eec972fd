"""Soft or weighted combinations against the paper's binary vote, training-free (issue #13, 4).

    python benchmarks/fidelity_combination.py --cache /work/cache --size 50 --seeds 0,1 \
        --out FILE.json

Per few-shot set: the three base matrices (the harness's estimators), their training-free
FID / KID / mIoU, then the paper's majority vote ("combination", tie-break by training-free
FID), the plain average ("average") and the vote weighted by each method's training-free
mIoU ("weighted_vote"), each scored training-free (source EMA behind A, paper Table 3). The
tie-break and the weights read the few-shot set only, as the harness's stages do
(`Bench.few_shot_scores`); the rows of 2026-12-02 read them from the test split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> int:
    from fidelity_common import Bench

    from cat_models.affinity.combination import average_affinity, majority_vote, weighted_vote
    from harness.stages_affinity import fid_ranking

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", type=Path, default=Path("/work/cache"))
    p.add_argument("--size", type=int, default=50)
    p.add_argument("--seeds", default="0")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        bench = Bench(args.cache, args.size, seed)
        bases = ("text", "segmentation", "features")
        mats = bench.affinities(list(bases), args.out.parent / "affinities")
        scores = {m: bench.training_free(mats[m]) for m in bases}   # reported (test split)
        # the vote's tie-break and weights from the few-shot set, as the harness's stages
        # (before 2026-12-05, evening, from the test-split scores above)
        few = bench.few_shot_scores({m: mats[m] for m in bases})
        ranking = fid_ranking(few)
        combos = {
            "combination (paper vote)": majority_vote({m: mats[m] for m in bases}, ranking),
            "average": average_affinity({m: mats[m] for m in bases}),
            "weighted_vote (training-free mIoU)": weighted_vote(
                {m: mats[m] for m in bases}, {m: few[m]["miou"] for m in bases}),
        }
        for name in bases:
            rows.append({"seed": seed, "A": name, **scores[name]})
        for name, a in combos.items():
            rows.append({"seed": seed, "A": name, **bench.training_free(a)})
        for r in rows[-6:]:
            print(r, flush=True)
    args.out.write_text(json.dumps(rows, indent=1))
    print("\n| seed | A | FID ↓ | KID ↓ | mIoU ↑ |\n|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['seed']} | {r['A']} | {r['fid']:.1f} | {r['kid']:.4f} ± {r['kid_std']:.4f} "
              f"| {100 * r['miou']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

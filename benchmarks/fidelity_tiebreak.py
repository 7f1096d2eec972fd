"""Which tie-break did a fidelity run's combination get, and which would a harness trial get?

    python benchmarks/fidelity_tiebreak.py --cache ~/.cache/cat-harness --target synthetic_aerial \
        --source-iterations 6000 --store STORE ROWS.jsonl [ROWS.jsonl …] > audit.jsonl

The paper's vote (`cat_models.affinity.combination.majority_vote`) breaks three-way ties by
the base methods' training-free FID. The harness ranks them on the few-shot set alone
(`harness.stages_affinity.few_shot_scores`); `fidelity_finetune.py` ranked them on the test
split until 2026-12-05 (evening). For every few-shot set of the combination rows in ROWS (the
`ranking` each row recorded), this scores the set's base matrices the harness's way
(`fidelity_common.Bench.few_shot_scores`, on the `Bench` of that set), votes
with both orders and prints one JSON line per set: both orders, the few-shot FIDs, and the
target classes whose source class differs (as [class, rows' source class, harness's]).

STORE is the run's matrix store (`<out folder>/affinities/<target>`): the base matrices of each
set in `size<n>-seed<s>[-fewshot]/` (they do not depend on the source generator, so any run's
store of that set serves). A row without a recorded ranking (its matrices came from a store)
takes the order its store's combination was voted with (`fidelity_common.stored_ranking`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rows", type=Path, nargs="+")
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--target", default="synthetic_target")
    ap.add_argument("--source-iterations", type=int, default=None)
    ap.add_argument("--store", type=Path, required=True)
    args = ap.parse_args()

    import torch
    from fidelity_common import Bench, stored_ranking

    from cat_models.affinity.combination import majority_vote
    from cat_models.affinity.matrix import AffinityMatrix
    from harness.stages_affinity import fid_ranking

    torch.set_num_threads(1)
    sets: dict[tuple[int, int], list[str] | None] = {}
    for path in args.rows:
        for line in path.read_text().splitlines():
            row = json.loads(line) if line.strip() else None
            if row and row["affinity"] == "combination" and row["variant"] == "paper":
                sets.setdefault((row["size"], row["seed"]), row.get("ranking"))
    if not sets:
        sys.exit(f"{', '.join(map(str, args.rows))}: no combination rows of variant 'paper'")
    for (size, seed), used in sorted(sets.items()):
        folder = next((f for f in (args.store / f"size{size}-seed{seed}",
                                   args.store / f"size{size}-seed{seed}-fewshot")
                       if (f / "features.npy").is_file()), None)
        if folder is None:
            sys.exit(f"{args.store}: no base matrices of size {size}, seed {seed}")
        matrices = {m: AffinityMatrix.load(folder / f"{m}.npy")
                    for m in ("text", "segmentation", "features")}
        used = used or stored_ranking(folder)
        # the harness's few-shot set, source model and evaluation segmenter for this set
        with contextlib.redirect_stdout(sys.stderr):   # stdout holds the JSON lines only
            bench = Bench(args.cache, size, seed, target_kind=args.target,
                          source_iterations=args.source_iterations)
        scores = bench.few_shot_scores(matrices)
        order = fid_ranking(scores)
        differ = []
        if used:
            ours, theirs = majority_vote(matrices, order), majority_vote(matrices, used)
            for k in np.flatnonzero(np.abs(ours.values - theirs.values).sum(0) > 1e-9):
                differ.append([ours.target_names[k],
                               theirs.source_names[int(theirs.values[:, k].argmax())],
                               ours.source_names[int(ours.values[:, k].argmax())]])
        print(json.dumps({"target": args.target, "source_iterations": args.source_iterations,
                          "size": size, "seed": seed,
                          "rows_ranking": used, "fewshot_ranking": order,
                          "fewshot_fid": {m: round(scores[m]["fid"], 2) for m in order},
                          "columns_differing": differ}), flush=True)


if __name__ == "__main__":
    main()

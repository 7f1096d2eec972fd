"""Does finetuning improve on CAT's training-free start? Per-iteration curves (issue #13, 1).

    python benchmarks/fidelity_finetune.py --cache /work/cache --size 50 --seed 0 \
        --variants paper,fixed --affinities combination,random --iterations 300 --eval-every 25 \
        --out /tmp/ft.json [--plot docs/images/fidelity_curves.png]

Runs the comparison straight through `cat_models` (no Ray, no harness trial): the source
model, the evaluation and source segmenters and the target benchmark come from a harness
cache (`studies/training_free.yaml` builds all of them); the few-shot subset is the harness's
(KL-greedy, paper §4.1) and its affinity matrices are estimated here with the harness's
estimator settings. For each (variant, affinity) it records

* the training-free model (the source EMA behind A, paper Table 3), then
* `finetune_oasis("cat", ...)` evaluated at iteration 0 (what the loop starts from) and
  every `--eval-every` iterations: FID, KID ± std, the real-data floor, mIoU.

A *variant* is a set of `cat` recipe options / `OasisConfig` fields (see VARIANTS); "paper" is
the recipe as the paper describes it and the harness ran it before issue #13. JSON lines go to
`--out` (appended, so runs can be split across invocations); `--plot` draws every curve found
in the file; `--plot-only` draws the file's runs only (`fidelity_plots.py`). `--rare house,sea
--rare-images 1` trains on a long-tail few-shot set instead (`cat_models.data.rare_class_subset`:
those classes in exactly one image each) and `--plot-only --rare-plot PNG` reads those runs'
rare and other classes apart. `torch.set_num_threads(--threads)` (default 1): the machine is
shared.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

# name -> (cat recipe options, OasisConfig fields, finetune_oasis keywords): each one a
# hypothesis of issue #13. "paper" is the recipe as the paper describes it (and the harness ran
# it before): G starts from the raw source generator, its new D head is trained together with
# G from the first step.
PAPER = {"source_weights": "generator", "bn_refresh_batches": 0}
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "paper": ({"d_warmup": 0}, {}, PAPER),
    "g_from_ema": ({"d_warmup": 0}, {}, {**PAPER, "source_weights": "ema"}),
    "d_warmup": ({"d_warmup": 50}, {}, PAPER),
    "bn_refresh": ({"d_warmup": 0}, {}, {**PAPER, "bn_refresh_batches": 50}),
    "labelmix0": ({"d_warmup": 0}, {"lambda_labelmix": 0.0}, PAPER),
    "lr_g_low": ({"d_warmup": 0}, {"lr_g": 2e-5}, PAPER),
    "ema_slow": ({"d_warmup": 0}, {"ema_decay": 0.999}, PAPER),
    "d_keep_fake": ({"d_warmup": 0, "d_head": "keep_fake"}, {}, PAPER),
    "d_affinity": ({"d_warmup": 0, "d_head": "affinity"}, {}, PAPER),
    # D sees every image (and label map) through DiffAugment-style transforms
    "d_augment": ({"d_warmup": 0}, {"d_augment": "color,translation,cutout"}, PAPER),
    "d_augment_geo": ({"d_warmup": 0}, {"d_augment": "translation,cutout"}, PAPER),
    "d_augment_color": ({"d_warmup": 0}, {"d_augment": "color"}, PAPER),
    # the absent-class anchor (beyond the paper, `cat_models.oasis.anchor`) at two weights
    "anchor3": ({"d_warmup": 0, "anchor_absent": 3.0}, {}, PAPER),
    "anchor30": ({"d_warmup": 0, "anchor_absent": 30.0}, {}, PAPER),
    # control: the anchor's probes share G's forward (and its batch-norm statistics) with the
    # training maps, but their loss is weighed ~0
    "probes_only": ({"d_warmup": 0, "anchor_absent": 1e-9}, {}, PAPER),
    # the anchor on every class (each shown class, relabelled as another, must be drawn as
    # training-free CAT drew that other class): does it hold back the drift of shown classes?
    "anchor_all3": ({"d_warmup": 0, "anchor_absent": 3.0, "anchor_max_images": 10**6}, {},
                    PAPER),
    "anchor_all30": ({"d_warmup": 0, "anchor_absent": 30.0, "anchor_max_images": 10**6}, {},
                     PAPER),
    # the anchor on the classes shown by one image at most (a set made with --rare-images 1)
    "anchor_once30": ({"d_warmup": 0, "anchor_absent": 30.0, "anchor_max_images": 1}, {},
                      PAPER),
    "defaults": ({}, {}, {}),   # whatever the library does now
}
TRIAL = {"lr_g": 1e-4, "lr_d": 4e-4, "batch_size": 8, "lambda_labelmix": 10.0}


def main() -> int:
    from fidelity_common import TARGET_KIND, Bench
    from fidelity_plots import plot, plot_pathways, plot_pooled, plot_rare, plot_sizes
    from fidelity_readings import label_pathways

    from cat_models.data.synthetic_domains import GROUND_TRUTHS
    from cat_models.oasis.finetune import finetune_oasis
    from cat_models.oasis.transfer import random_affinity

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", type=Path, default=Path("/work/cache"))
    p.add_argument("--size", type=int, default=50)
    p.add_argument("--target", default=TARGET_KIND,
                   help="target dataset kind in the cache (synthetic_target, synthetic_aerial; "
                        "synthetic_source with --affinities identity: the source-domain control)")
    p.add_argument("--source-seed", type=int, default=0,
                   help="the source model pretrained from this seed (the cache may hold several)")
    p.add_argument("--source-iterations", type=int,
                   help="the source model pretrained for this many iterations (default: the "
                        "newest of the seed's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rare", help="a long-tail probe: these target classes (comma-separated) "
                   "are shown by exactly --rare-images images of the few-shot set "
                   "(cat_models.data.rare_class_subset), the rest is KL-greedy without them")
    p.add_argument("--rare-images", type=int, default=1,
                   help="with --rare: images per rare class (0: the set never shows them)")
    p.add_argument("--ranking", help="the combination's tie-break order, best first (e.g. "
                   "segmentation,text,features); default: the harness's, by training-free FID "
                   "on the few-shot set")
    p.add_argument("--variants", default="paper,fixed")
    p.add_argument("--affinities", default="combination,random")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--stage1", type=int, default=100)
    p.add_argument("--freeze-d", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--n-samples", type=int, default=64)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra recipe option or OasisConfig field for every run (JSON value)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--plot", type=Path)
    p.add_argument("--plot-only", action="store_true")
    p.add_argument("--no-floor", action="store_true",
                   help="leave the real-data floor out of the plot (zooms the FID/KID axes)")
    p.add_argument("--select", help="plot only these variant/affinity runs (comma-separated)")
    p.add_argument("--sizes", help="plot only the runs of these few-shot set sizes "
                                   "(comma-separated)")
    p.add_argument("--pool-seeds", action="store_true",
                   help="with --plot-only: one curve per (variant, affinity, size, FreezeD), the "
                        "mean over the seeds in the file, and a markdown table of mean ± std")
    p.add_argument("--size-plot", type=Path,
                   help="with --plot-only: FID / KID / mIoU at each run's last evaluation and "
                        "training-free vs the few-shot set size (paper Fig. 4), mean ± std over "
                        "the seeds in the file, as PNG (HTML where no PNG can be "
                        "written)")
    p.add_argument("--pathways", type=Path,
                   help="with --plot-only: how each run's generator tells the target classes "
                        "apart over its evaluations (A's top-1 against the ground truth, the "
                        "residual branches' share, the classes' contrast; see "
                        "fidelity_readings.label_pathways) with FID beside them, as PNG, and a "
                        "markdown table")
    p.add_argument("--rare-plot", type=Path,
                   help="with --plot-only: the runs with --rare, mean over seeds: FID and the "
                        "mean IoU of the rare classes and of the other classes vs iteration, "
                        "as PNG, and a markdown table of mean ± std; with --rare, runs on the "
                        "harness's set too, those classes read as their rare ones")
    p.add_argument("--rare-shown",
                   help="with --rare-plot or --pool-seeds: only the runs whose set showed the "
                        "rare classes in these numbers of images each (comma-separated; 'kl' = "
                        "the harness's set)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--samples", type=Path,
                   help="save a sample grid (label map | real | generated) of each evaluation "
                        "here: <variant>-<affinity>-<size>-s<seed>-it<iteration>.png")
    p.add_argument("--train-fid", action="store_true",
                   help="also score against the few-shot set itself (memorisation check)")
    args = p.parse_args()
    rare = args.rare.split(",") if args.rare else None
    shown = args.rare_shown.split(",") if args.rare_shown else None
    if args.plot_only:
        if args.pathways:
            plot_pathways(args.out, args.pathways, args.select, args.sizes)
        if args.size_plot:
            plot_sizes(args.out, args.size_plot, args.select, args.sizes)
        if args.rare_plot:
            plot_rare(args.out, args.rare_plot, args.select, args.sizes, rare, shown)
        if args.pool_seeds:
            return plot_pooled(args.out, args.plot, args.select, not args.no_floor,
                               args.sizes, shown)
        if (args.pathways or args.size_plot or args.rare_plot) and not args.plot:
            return 0
        return plot(args.out, args.plot, args.select, not args.no_floor, args.sizes)
    torch.set_num_threads(args.threads)

    bench = Bench(args.cache, args.size, args.seed, args.n_samples, args.target,
                  args.source_seed, args.source_iterations,
                  (rare, args.rare_images) if rare else None)
    if args.train_fid:
        bench.track_training_set()
    source, test, data, score = bench.source, bench.test, bench.train, bench.score
    wanted = args.affinities.split(",")
    mats = bench.affinities([w for w in wanted if w != "identity"],
                            args.out.parent / "affinities" / args.target,
                            args.ranking.split(",") if args.ranking else None)
    if "identity" in wanted:   # the control: the source's own classes, A = I
        import numpy as np
        mats["identity"] = np.eye(source.num_classes, test.num_classes)
    extra = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    cfg_fields = set(source.cfg.to_dict())

    def pathways(generator) -> dict:
        return {"pathways": label_pathways(generator, source.class_names, test.class_names,
                                           GROUND_TRUTHS.get(args.target))}
    for variant in args.variants.split(","):
        options, cfg_over, ft = VARIANTS[variant]
        options = {**options, **{k: v for k, v in extra.items() if k not in cfg_fields}}
        cfg_over = {**cfg_over, **{k: v for k, v in extra.items() if k in cfg_fields}}
        cfg = source.cfg.replace(**{**TRIAL, **cfg_over})
        for aff in wanted:
            a = None if aff == "random" else mats[aff]
            if a is None:   # the harness's random A: the trial's seed
                a = random_affinity(source.num_classes, test.num_classes, args.seed)
            start = time.perf_counter()
            curve = [{"iteration": -1, **bench.training_free(a)}]
            stem = f"{variant}-{aff}-{args.size}-s{args.seed}"
            if args.samples:
                from cat_models.oasis.sampling import training_free_generator

                bench.save_samples(training_free_generator(source, a),
                                   args.samples / f"{stem}-training-free.png")
            kw = dict(affinity=a, freeze_d=args.freeze_d, stage1_iters=args.stage1, **options,
                      **ft)

            s0 = finetune_oasis("cat", source, data, 0, cfg, seed=args.seed, **kw)
            curve.append({"iteration": 0, **score(s0.ema), **pathways(s0.ema)})

            def evaluate(ema, step, variant=variant, aff=aff, stem=stem):
                r = {**score(ema), **pathways(ema)}
                if args.samples:
                    bench.save_samples(ema, args.samples / f"{stem}-it{step}.png")
                print(f"  {variant}/{aff} it {step}: "
                      f"{ {k: v for k, v in r.items() if k not in ('tv_class', 'iou', 'pathways')} }"
                      f" {({k: v for k, v in r['pathways'].items() if k != 'a_argmax'})}",
                      flush=True)
                return r

            state = finetune_oasis("cat", source, data, args.iterations, cfg, seed=args.seed,
                                   evaluate_fn=evaluate, eval_every=args.eval_every,
                                   report_every=0, **kw)
            keys = ("iteration", "fid", "kid", "kid_std", "miou", "iou", "tv", "tv_x", "tv_y",
                    "tv_class", "fid_train", "kid_train", "miou_train", "pathways", "g_anchor")
            curve += [{k: h[k] for k in keys if k in h} for h in state.history if "fid" in h]
            if state.plan.anchor is not None:
                print(f"  {variant}/{aff}: anchored classes: "
                      f"{[test.class_names[c - 1] for c in state.plan.anchor.classes]}")
            row = {"variant": variant, "affinity": aff, "size": args.size, "seed": args.seed,
                   "target": args.target, "source_seed": args.source_seed,
                   "source_iterations": bench.source_iterations,
                   "ranking": bench.ranking, "freeze_d": args.freeze_d,
                   "stage1_iterations": args.stage1,
                   "options": {**options, **cfg_over, **ft}, "floor": bench.evaluator.floor,
                   **bench.evaluator.reference,
                   "real_tv": bench.real_tv, "real_tv_class": bench.real_tv_class,
                   "curve": curve, "seconds": round(time.perf_counter() - start)}
            if rare:
                row["rare"] = {"classes": rare, "per_class": args.rare_images}
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"[done] {variant}/{aff}: training-free {curve[0]['fid']:.1f} / "
                  f"{curve[0]['miou']:.3f}, start {curve[1]['fid']:.1f}, best "
                  f"{min(c['fid'] for c in curve[1:]):.1f}, final {curve[-1]['fid']:.1f} / "
                  f"{curve[-1]['miou']:.3f} ({row['seconds']} s)", flush=True)
    if args.plot:
        plot(args.out, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

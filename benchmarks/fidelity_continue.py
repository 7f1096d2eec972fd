"""Continue the source model's own training, one recipe change at a time (issue #13, problem 1).

    PYTHONPATH=.:benchmarks python benchmarks/fidelity_continue.py --cache CACHE \
        --arms resume,fresh_adam,ema_restart,trial_lr,fresh_all --iterations 300 \
        --eval-every 50 --seed 0 --out FILE.jsonl [--n-samples 120] [--plot PNG]

Why: the source model is far from converged at 1,500 iterations (3,000 give FID 221 against
293 on its validation split), yet the trial's finetuning recipe, run on the source model's own
domain and all 1,080 of its training images with A = identity, ends *above* the model it
starts from. Pretraining itself, continued, should improve. Between "continue pretraining" and
"the trial's recipe" lie a handful of differences; this script walks them one at a time, on the
source domain, with the source's own D (no new head, no frozen layers, one stage), so the one
that turns improvement into drift shows.

Every arm starts from the pretraining loop's last checkpoint (`<source.pt>.train/latest.pt`:
G, D, EMA, both Adam states, step 1,500) and trains `--iterations` more steps of the
`scratch` plan (every weight of G and D) on the source training split, with the pretraining
augmentation. What an arm changes:

* `opt`: "source" keeps both Adam states (moments and step counts), "fresh" starts new ones;
* `ema`: "source" continues the pretraining EMA, "generator" restarts it from the raw G (what
  `finetune_oasis` does);
* `lr`: "pretrain" keeps the preset's 5e-4 / 1e-3, "trial" uses the trials' 1e-4 / 4e-4.

`resume` (source / source / pretrain) with `--seed 0` is exactly pretraining run for 1,500 +
`--iterations` steps (the step generator is seeded by (seed, step)); `--seed 1` draws other
batches and noise from the same start. The EMA is scored every `--eval-every` steps on the
source validation label maps with the source segmenter (FID, KID ± std, mIoU), and the start
is scored as the source EMA and as the raw G.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

ARMS: dict[str, dict[str, str]] = {
    "resume": {"opt": "source", "ema": "source", "lr": "pretrain"},
    "fresh_adam": {"opt": "fresh", "ema": "source", "lr": "pretrain"},
    "ema_restart": {"opt": "source", "ema": "generator", "lr": "pretrain"},
    "trial_lr": {"opt": "source", "ema": "source", "lr": "trial"},
    "fresh_adam_trial_lr": {"opt": "fresh", "ema": "source", "lr": "trial"},
    "fresh_all": {"opt": "fresh", "ema": "generator", "lr": "trial"},
}
TRIAL_LR = {"lr_g": 1e-4, "lr_d": 4e-4}


def start_checkpoint(latest: Path, arm: dict[str, str], cfg, classes: int, out: Path
                     ) -> Path:
    """The pretraining checkpoint with the arm's changes, written where `train_oasis` can
    resume from it. A fresh Adam is the saved one without its per-parameter state (moments
    and step counts): its parameter groups are those a new optimizer of the same plan has."""
    payload = torch.load(latest, map_location="cpu", weights_only=False)
    for key, lr in (("opt_g", cfg.lr_g), ("opt_d", cfg.lr_d)):
        if arm["opt"] == "fresh":
            payload[key]["state"] = {}
        for group in payload[key]["param_groups"]:
            group["lr"] = lr
    if arm["ema"] == "generator":
        payload["EMA"] = {k: v.clone() for k, v in payload["G"].items()}
    payload["history"] = []
    torch.save(payload, out)
    return out


def main() -> int:
    from fidelity_common import PANEL_TITLES, SOURCE_KIND, Bench, line_panels, target_root

    from cat_models.data import open_dataset
    from cat_models.oasis.baselines import build_plan
    from cat_models.oasis.train import train_oasis

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--iterations", type=int, default=300, help="steps beyond the checkpoint")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--n-samples", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--plot", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    bench = Bench(args.cache, 1080, 0, args.n_samples, "synthetic_source")
    source = bench.source
    latest = _latest(args.cache)
    data = open_dataset("folder", target_root(args.cache, SOURCE_KIND), "train",
                        source.cfg.resolution, augment=True)
    start_step = int(torch.load(latest, map_location="cpu", weights_only=False)["step"])
    start_scores = {"source_ema": bench.score(source.ema),
                    "source_generator": bench.score(source.generator)}
    print(f"[start] step {start_step}: EMA FID {start_scores['source_ema']['fid']:.1f}, raw G "
          f"{start_scores['source_generator']['fid']:.1f}", flush=True)
    for name in args.arms.split(","):
        arm = ARMS[name]
        cfg = source.cfg.replace(**(TRIAL_LR if arm["lr"] == "trial" else {}))
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = start_checkpoint(latest, arm, cfg, data.num_classes, Path(tmp) / "start.pt")
            plan = build_plan("scratch", None, None, data.num_classes, cfg=cfg, seed=0)

            def evaluate(ema, step, name=name):
                r = bench.score(ema)
                print(f"  {name} it {step}: FID {r['fid']:.1f} KID {r['kid'] * 1e3:.1f} "
                      f"mIoU {r['miou'] * 100:.1f}", flush=True)
                return r

            state = train_oasis(plan, data, cfg, start_step + args.iterations, seed=args.seed,
                                resume=ckpt, evaluate_fn=evaluate, eval_every=args.eval_every,
                                report_every=0)
        keys = ("iteration", "fid", "kid", "kid_std", "miou", "tv")
        curve = [{k: h[k] for k in keys if k in h} for h in state.history if "fid" in h]
        row = {"arm": name, **arm, "seed": args.seed, "start_step": start_step,
               "lr_g": cfg.lr_g, "lr_d": cfg.lr_d, "n_samples": args.n_samples,
               "start": {k: {m: v[m] for m in keys[1:] if m in v}
                         for k, v in start_scores.items()},
               "floor": bench.evaluator.floor, "curve": curve,
               "seconds": round(time.perf_counter() - t0)}
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[done] {name} seed {args.seed}: start EMA "
              f"{start_scores['source_ema']['fid']:.1f} -> final {curve[-1]['fid']:.1f} "
              f"({row['seconds']} s)", flush=True)
    if args.plot:
        rows = [json.loads(x) for x in args.out.read_text().splitlines() if x.strip()]
        panels = []
        for key, title in PANEL_TITLES.items():
            series = [{"label": f"{r['arm']} (seed {r['seed']})", "colour": i,
                       "x": [c["iteration"] for c in r["curve"]],
                       "y": [c[key] for c in r["curve"]]} for i, r in enumerate(rows)]
            hl = [{"y": rows[0]["start"]["source_ema"][key], "colour": None,
                   "label": "dashed: the source EMA at the start"}] if rows else []
            panels.append({"title": title, "series": series, "hlines": hl})
        print(f"[plot] {line_panels(panels, args.plot)}")
    return 0


def _latest(cache: Path) -> Path:
    """The pretraining loop's last checkpoint for the cached source model."""
    from fidelity_common import find_one

    from cat_models.oasis.pretrain import loop_checkpoint
    from harness.stages import source_work

    digest = find_one(cache, "source-model", "source.pt", "synthetic_source", 0).parent.name
    latest = loop_checkpoint(source_work(cache, digest) / "source.pt")
    if not latest.is_file():
        raise SystemExit(f"{latest}: no pretraining checkpoint for source model {digest}")
    return latest


if __name__ == "__main__":
    raise SystemExit(main())

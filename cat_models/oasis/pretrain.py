"""Source pretraining: train OASIS from scratch on the source domain and write a checkpoint.

    python -m cat_models.oasis.pretrain --out source.pt --iterations 1500 [--preset bench32]
        [--data-root DIR --data-kind folder] [--resolution 64] [--seed 0] [--device cpu]

Without `--data-root` it trains on the embedded synthetic benchmark's source domain
(`cat_models.data.synthetic.ensure_benchmark`). The output is a source checkpoint
(`source.py`) that `finetune_oasis` and `training_free_generator` read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cat_models.oasis.baselines import build_plan
from cat_models.oasis.config import PRESETS, OasisConfig, preset
from cat_models.oasis.source import save_source
from cat_models.oasis.train import Evaluate, Report, train_oasis


def loop_checkpoint(out: str | Path) -> Path:
    """Where `pretrain_source(..., out)` keeps its resumable loop state: `<out>.train/latest.pt`
    (G, D, EMA, both Adam states and the step)."""
    out = Path(out)
    return out.with_name(out.name + ".train") / "latest.pt"


def pretrain_source(data: Any, cfg: OasisConfig, iterations: int, out: str | Path,
                    seed: int = 0, device: str = "cpu", on_report: Report | None = None,
                    report_every: int = 50, checkpoint_every: int = 500,
                    evaluate_fn: Evaluate | None = None, eval_every: int = 0) -> Path:
    """Train a fresh OASIS on `data` (a SegmentationDataset) and save a source checkpoint.

    Resumable: the loop state lives in `<out>.train/latest.pt` and is picked up on rerun.
    """
    out = Path(out)
    plan = build_plan("scratch", None, None, data.num_classes, cfg=cfg, seed=seed)
    latest = loop_checkpoint(out)
    work = latest.parent
    state = train_oasis(plan, data, cfg, iterations, seed=seed, device=device,
                        checkpoint_dir=work, checkpoint_every=checkpoint_every,
                        resume=latest if latest.is_file() else None, on_report=on_report,
                        report_every=report_every, evaluate_fn=evaluate_fn,
                        eval_every=eval_every)
    return save_source(out, cfg, list(data.class_names), plan.generator.cpu(),
                       plan.discriminator.cpu(), state.ema.cpu())


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cat_models.oasis.pretrain",
                                description="Pretrain an OASIS source model.")
    p.add_argument("--out", required=True, help="source checkpoint to write (.pt)")
    p.add_argument("--iterations", type=int, default=1500)
    p.add_argument("--preset", default="bench32", choices=sorted(PRESETS))
    p.add_argument("--resolution", type=int, nargs="+", default=None,
                   help="H [W]; default: the preset's")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--data-root", default=None, help="dataset root (default: embedded "
                   "synthetic benchmark, source domain)")
    p.add_argument("--data-kind", default="folder",
                   choices=["ade20k", "coco_stuff", "cityscapes", "folder"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--report-every", type=int, default=50)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from cat_models.data import open_dataset

    args = _parse(argv)
    overrides: dict[str, Any] = {}
    if args.resolution:
        overrides["resolution"] = tuple(args.resolution * (2 if len(args.resolution) == 1
                                                           else 1))
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    cfg = preset(args.preset, **overrides)
    root = args.data_root
    if root is None:
        from cat_models.data.synthetic import ensure_benchmark

        root = ensure_benchmark(resolution=cfg.resolution[0]).source_root
    data = open_dataset(args.data_kind, root, split="train", resolution=cfg.resolution,
                        augment=True)
    path = pretrain_source(data, cfg, args.iterations, args.out, seed=args.seed,
                           device=args.device, report_every=args.report_every,
                           on_report=lambda r: print(json.dumps(r), flush=True))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

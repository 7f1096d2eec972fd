"""Finetune a source model on a (few-shot) target set with CAT or a baseline, by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cat_models.oasis.baselines import build_plan
from cat_models.oasis.config import OasisConfig
from cat_models.oasis.source import SourceModel
from cat_models.oasis.train import (
    BN_REFRESH_BATCHES,
    Evaluate,
    Report,
    TrainState,
    train_oasis,
)

# Which source generator finetuning starts from; the first is the default.
SOURCE_WEIGHTS = ("generator", "ema")


def finetune_oasis(method: str, source: SourceModel | None, target_data: Any, iterations: int,
                   cfg: OasisConfig | None = None, *, seed: int = 0, device: str = "cpu",
                   checkpoint_dir: str | Path | None = None, checkpoint_every: int = 0,
                   resume: str | Path | None = None, on_report: Report | None = None,
                   report_every: int = 10, evaluate_fn: Evaluate | None = None,
                   eval_every: int = 0, report_all_ranks: bool = False,
                   source_weights: str = SOURCE_WEIGHTS[0],
                   bn_refresh_batches: int = BN_REFRESH_BATCHES, **options: Any) -> TrainState:
    """Run transfer method `method` ("cat", "freezed", ... see BASELINES) for `iterations`.

    `options` go to the recipe (e.g. affinity=A, freeze_d=3, stage1_iters=..., split=False).
    `cfg` defaults to the source's config (lr, batch size, LabelMix λ, EMA decay...).
    `source_weights`: which source generator G (and its EMA) start from, "ema" or the raw
    "generator" weights (see SOURCE_WEIGHTS). `bn_refresh_batches`: see `train_oasis`.
    The returned state holds `.plan.generator`, `.ema`, `.history`.
    """
    cfg = cfg or (source.cfg if source is not None else None)
    if cfg is None:
        raise ValueError("finetune_oasis: pass cfg when there is no source model ('scratch')")
    if source_weights not in SOURCE_WEIGHTS:
        raise ValueError(f"finetune_oasis: source_weights must be one of {SOURCE_WEIGHTS}, "
                         f"got {source_weights!r}")
    source_g = None
    if source is not None:
        source_g = source.ema if source_weights == "ema" else source.generator
    plan = build_plan(method, source_g,
                      source.discriminator if source else None, target_data.num_classes,
                      cfg=cfg, seed=seed, **options)
    return train_oasis(plan, target_data, cfg, iterations, seed=seed, device=device,
                       checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                       resume=resume, on_report=on_report, report_every=report_every,
                       evaluate_fn=evaluate_fn, eval_every=eval_every,
                       report_all_ranks=report_all_ranks,
                       bn_refresh_batches=bn_refresh_batches)

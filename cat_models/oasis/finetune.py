"""Finetune a source model on a (few-shot) target set with CAT or a baseline, by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cat_models.oasis.baselines import build_plan
from cat_models.oasis.config import OasisConfig
from cat_models.oasis.source import SourceModel
from cat_models.oasis.train import Evaluate, Report, TrainState, train_oasis


def finetune_oasis(method: str, source: SourceModel | None, target_data: Any, iterations: int,
                   cfg: OasisConfig | None = None, *, seed: int = 0, device: str = "cpu",
                   checkpoint_dir: str | Path | None = None, checkpoint_every: int = 0,
                   resume: str | Path | None = None, on_report: Report | None = None,
                   report_every: int = 10, evaluate_fn: Evaluate | None = None,
                   eval_every: int = 0, report_all_ranks: bool = False,
                   **options: Any) -> TrainState:
    """Run transfer method `method` ("cat", "freezed", ... see BASELINES) for `iterations`.

    `options` go to the recipe (e.g. affinity=A, freeze_d=3, stage1_iters=..., split=False).
    `cfg` defaults to the source's config (lr, batch size, LabelMix λ, EMA decay...).
    The returned state holds `.plan.generator`, `.ema`, `.history`.
    """
    cfg = cfg or (source.cfg if source is not None else None)
    if cfg is None:
        raise ValueError("finetune_oasis: pass cfg when there is no source model ('scratch')")
    plan = build_plan(method, source.generator if source else None,
                      source.discriminator if source else None, target_data.num_classes,
                      cfg=cfg, seed=seed, **options)
    return train_oasis(plan, target_data, cfg, iterations, seed=seed, device=device,
                       checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                       resume=resume, on_report=on_report, report_every=report_every,
                       evaluate_fn=evaluate_fn, eval_every=eval_every,
                       report_all_ranks=report_all_ranks)

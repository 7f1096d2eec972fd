"""Transfer recipes by name: CAT and the Table 2 baselines (paper §4.1), one registry.

A recipe turns (source G, source D, target class count, options) into a `TransferPlan`: the
target-ready G and D, the training stages (which parameters train, for how many iterations)
and an optional generator regulariser. `train_oasis` runs any plan with the same loop.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cat_models.oasis.anchor import AbsentClassAnchor
from cat_models.oasis.config import OasisConfig
from cat_models.oasis.discriminator import OasisDiscriminator, build_discriminator
from cat_models.oasis.generator import OasisGenerator, build_generator
from cat_models.oasis.transfer import (
    cat_generator,
    frozen_d_prefixes,
    reinit_label_inputs,
    replace_d_head,
)
from cat_models.recipes import (
    NamePredicate,
    RecipeRegistry,
    everything,
    nothing,
    set_trainable,
    stage_index,
    under,
)


def contains_any(*parts: str) -> NamePredicate:
    return lambda name: any(p in name for p in parts)


def not_prefixed(prefixes: tuple[str, ...]) -> NamePredicate:
    inside = under(*prefixes)
    return lambda name: not inside(name)


@dataclass
class Stage:
    """Trainable parameters (by name) for `iters` iterations (None = until the end)."""

    iters: int | None
    train_g: NamePredicate = everything
    train_d: NamePredicate = everything


@dataclass
class TransferPlan:
    name: str
    generator: OasisGenerator
    discriminator: OasisDiscriminator
    stages: list[Stage]
    regulariser: Callable[[nn.Module], torch.Tensor] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # Keeps the classes the training set never shows as the start drew them (`anchor.py`).
    anchor: AbsentClassAnchor | None = None

    def stage_index(self, step: int) -> int:
        return stage_index(self.stages, step)

    def apply_stage(self, step: int) -> int:
        """Set `requires_grad` on G and D for the stage active at `step`; returns its index."""
        i = self.stage_index(step)
        set_trainable(self.generator, self.stages[i].train_g)
        set_trainable(self.discriminator, self.stages[i].train_d)
        return i


Recipe = Callable[..., TransferPlan]
# Recipes take (source_g, source_d, target_classes); `cfg` is the model's, passed by build_plan.
BASELINES = RecipeRegistry("OASIS", positional=3, internal=("cfg",))
register = BASELINES.register


def build_plan(name: str, source_g: OasisGenerator | None, source_d: OasisDiscriminator | None,
               target_classes: int, cfg: OasisConfig | None = None, **options: Any
               ) -> TransferPlan:
    """The plan for recipe `name` (see BASELINES). Source models are copied, never modified."""
    recipe = BASELINES.get_recipe(name)
    # New layers are drawn from a fixed seed, so every DDP rank (and a resumed run) builds
    # the same plan without touching the caller's RNG.
    # `seed` is every trial's and `cfg` the model's: passed to the recipes that declare them.
    takes = set(recipe_options(name))
    unknown = sorted(set(options) - takes - {"seed"})
    if unknown:
        raise TypeError(f"transfer method {name!r} takes no option(s) {unknown}; "
                        f"it takes {sorted(takes) or 'none'}")
    kwargs = {k: v for k, v in options.items() if k in takes}
    if "cfg" in inspect.signature(recipe).parameters:
        kwargs["cfg"] = cfg
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(options.get("seed", 0)))
        plan = recipe(source_g, source_d, target_classes, **kwargs)
    plan.options = {"method": name, **options}
    return plan


def recipe_options(name: str) -> list[str]:
    """The keyword options recipe `name` takes (what `build_plan(name, ..., **options)` passes
    on; any other option but `seed` is an error there, so callers validate user input early)."""
    return BASELINES.options(name)


def _need(source: Any, name: str) -> None:
    if source is None:
        raise ValueError(f"transfer method {name!r} needs a source generator and discriminator")


AFFINITY = "condition.affinity"   # the CAT generator's A (`transfer.AffinityLayer`)
# Generator parameters CAT's stage 1 trains (paper §3.2): A, the first convs, residual branches.
CAT_STAGE1 = contains_any(AFFINITY, "conv_gamma", "conv_beta", "conv_shared",
                          "res_gamma", "res_beta")
LABEL_INPUTS = contains_any("mlp_shared.0", "fc.")


def _but_affinity(train: NamePredicate) -> NamePredicate:
    """`train` without the affinity matrix A."""
    return lambda name: train(name) and AFFINITY not in name


@register("scratch")
def scratch(source_g, source_d, target_classes, cfg=None, seed: int = 0
            ) -> TransferPlan:
    """No transfer: fresh OASIS at the target classes (paper §4.1)."""
    cfg = cfg or (source_g.cfg if source_g is not None else None)
    if cfg is None:
        raise ValueError("'scratch' needs cfg (or a source generator to copy its config from)")
    return TransferPlan("scratch", build_generator(cfg, target_classes),
                        build_discriminator(cfg, target_classes), [Stage(None)])


@register("transfergan")
def transfergan(source_g, source_d, target_classes) -> TransferPlan:
    """TransferGAN (Wang et al. 2018): finetune every layer of G and D."""
    _need(source_g, "transfergan")
    return TransferPlan("transfergan", reinit_label_inputs(source_g, target_classes),
                        replace_d_head(source_d, target_classes), [Stage(None)])


@register("freezed")
def freezed(source_g, source_d, target_classes, freeze_d: int = 3) -> TransferPlan:
    """FreezeD (Mo et al. 2020): as TransferGAN with the first `freeze_d` D layers frozen."""
    _need(source_g, "freezed")
    d = replace_d_head(source_d, target_classes)
    return TransferPlan("freezed", reinit_label_inputs(source_g, target_classes), d,
                        [Stage(None, train_d=not_prefixed(frozen_d_prefixes(d, freeze_d)))])


@register("bsa")
def bsa(source_g, source_d, target_classes) -> TransferPlan:
    """BSA (Noguchi & Harada 2019) for SPADE: only the first (label) layer of each SPADE block
    trains in G, plus `fc`, whose label columns are new; D finetunes fully (paper §4.1)."""
    _need(source_g, "bsa")
    return TransferPlan("bsa", reinit_label_inputs(source_g, target_classes),
                        replace_d_head(source_d, target_classes),
                        [Stage(None, train_g=LABEL_INPUTS)])


@register("minegan")
def minegan(source_g, source_d, target_classes, stage1_iters: int = 1000
            ) -> TransferPlan:
    """MineGAN (Wang et al. 2020): stage 1 trains the miner on z + the class-embedding (label
    input) layers with G otherwise frozen; stage 2 finetunes all of G and D (paper §4.1)."""
    _need(source_g, "minegan")
    g = reinit_label_inputs(source_g, target_classes, miner=True)
    stage1 = Stage(stage1_iters, train_g=lambda n: n.startswith("condition.miner")
                   or LABEL_INPUTS(n))
    return TransferPlan("minegan", g, replace_d_head(source_d, target_classes),
                        [stage1, Stage(None)])


@register("cgantransfer")
def cgantransfer(source_g, source_d, target_classes, seed: int = 0, l1: float = 1e-2,
                 l2: float = 1e-2) -> TransferPlan:
    """cGANTransfer (Shahbazi et al. 2021) for SPADE: target classes as trainable combinations
    of source classes (random init), residual layers after the first conv, trained with the
    SPADE scale/shift layers; ℓ1 on the combination weights (sparsity) and ℓ2 on the residual
    weights. The rest of G is frozen; D finetunes fully."""
    _need(source_g, "cgantransfer")
    g = cat_generator(source_g, target_classes, None, split=False, residual=True, seed=seed)
    train_g = contains_any(AFFINITY, "conv_shared", "res_gamma", "res_beta",
                           "mlp_gamma", "mlp_beta")

    def regulariser(gen: nn.Module) -> torch.Tensor:
        gen = getattr(gen, "module", gen)
        a = gen.condition.affinity.weight
        res = [p for n, p in gen.named_parameters() if "res_" in n and n.endswith("weight")]
        return l1 * a.abs().sum() + l2 * sum((p ** 2).sum() for p in res)

    return TransferPlan("cgantransfer", g, replace_d_head(source_d, target_classes),
                        [Stage(None, train_g=train_g)], regulariser=regulariser)


@register("cat")
def cat(source_g, source_d, target_classes, affinity: Any | None = None, split: bool = True,
        residual: bool = True, freeze_d: int = 3, two_stage: bool = True,
        stage1_iters: int = 1000, d_warmup: int = 0, d_head: str = "fresh",
        train_affinity: bool = True, anchor_absent: float = 0.0, anchor_max_images: int = 0,
        seed: int = 0) -> TransferPlan:
    """CAT (paper §3.2). Each switch is independent (Table 4): `affinity` None -> random A;
    `split` scale/shift first convs; `residual` branches; `freeze_d` first k D layers;
    `two_stage`: stage 1 (stage1_iters) trains A + first convs + residuals, stage 2 all of G.
    `d_warmup` (beyond the paper; 0 = the paper's schedule): that many iterations first in
    which only D trains (G frozen), so G never follows the gradients of a random D head.
    `d_head` (beyond the paper's "fresh"): how D's new last layer starts, see
    `replace_d_head` ("keep_fake", "affinity").
    `train_affinity` False (an ablation beyond the paper, which trains A in both stages): A
    stays as estimated for the whole run; every other switch trains what it says.
    `anchor_absent` (beyond the paper; 0 = off): weight of the absent-class anchor, which keeps
    the target classes the training set never shows drawn as training-free CAT drew them
    (`cat_models.oasis.anchor`; on a set that shows every class it does nothing).
    `anchor_max_images` (with `anchor_absent`): anchor the classes shown by at most that many
    images of the set instead (0 = only the absent ones; >= the set's size: every class)."""
    _need(source_g, "cat")
    g = cat_generator(source_g, target_classes, affinity, split=split, residual=residual,
                      seed=seed)
    d = replace_d_head(source_d, target_classes, d_head, g.condition.affinity.weight)
    train_d = not_prefixed(frozen_d_prefixes(d, freeze_d))
    stage1_g = (CAT_STAGE1 if split or residual
                else contains_any(AFFINITY, "mlp_shared.0"))
    stage2_g = everything
    if not train_affinity:
        stage1_g, stage2_g = _but_affinity(stage1_g), _but_affinity(stage2_g)
    stages = ([Stage(stage1_iters, stage1_g, train_d), Stage(None, stage2_g, train_d)]
              if two_stage else [Stage(None, stage2_g, train_d)])
    if d_warmup < 0:
        raise ValueError(f"cat: d_warmup must be >= 0, got {d_warmup}")
    if d_warmup:
        stages.insert(0, Stage(d_warmup, nothing, train_d))
    if anchor_max_images and not anchor_absent:
        raise ValueError("cat: anchor_max_images needs anchor_absent (the anchor's weight) > 0")
    anchor = (AbsentClassAnchor(g, anchor_absent, anchor_max_images) if anchor_absent
              else None)
    return TransferPlan("cat", g, d, stages, anchor=anchor)

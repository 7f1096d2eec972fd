"""PITI transfer recipes by name: CAT-PITI with its Table 5 switches and the baselines.

A recipe turns (source model, target class count, generic model, options) into a
`TransferPlan`: the target-ready model and the training stages (which parameters train, for
how many iterations). One training loop runs every plan; a plan without stages is used as is
(training-free transfer). With an upsampler (paper §3.3: "finetune both the low resolution
model as well as the conditional upsampling model"), the same recipe is applied to the base
and to the upsampler, each its own plan.

- "cat" (paper §3.3): A prepended to the encoder, `prompt_count` deep prompts, FixDec (the
  U-Net and the encoder transformer frozen; A, the prompts and the encoder's last CNN block
  train). Table 5's switches: `fix_decoder=False` trains every layer; `prompt_count=0` has no
  prompts; `use_affinity=False` is "w/o CAT": no A, the first encoder layer re-initialised for
  the target one-hot (it then trains too). `affinity=None` with `use_affinity` is the random A
  of Tables 1 and 3. Table 5's first row (no FixDec, no prompts, no CAT) is "finetune_all".
- "finetune_all" (paper §4.1): source PITI, first encoder layer re-initialised, all trained.
- "from_glide" (paper §4.1): an encoder from scratch on a generic decoder (`generic`: GLIDE,
  or at the embedded scale a decoder pretrained on source images with the empty mask only);
  stage 1 trains the encoder alone (as PITI maps masks into a frozen GLIDE first), stage 2
  everything.
- "training_free" (paper §4.3, Table 3): A only, no finetuning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from cat_models import recipes as common
from cat_models.piti.model import PitiModel
from cat_models.piti.transfer import (
    cat_model,
    from_generic,
    reinit_mask_input,
    with_prompts,
)
from cat_models.recipes import NamePredicate, everything, nothing, set_trainable, under

# Not given in the paper (its supplementary holds the value); 4 keeps the token count of the
# embedded 8×8 grid almost unchanged. Swept by studies/prompt_count.yaml.
DEFAULT_PROMPT_COUNT = 4


@dataclass
class Stage:
    """Trainable parameters (by name) for `iters` iterations (None = until the end)."""

    iters: int | None
    train: NamePredicate = everything


@dataclass
class TransferPlan:
    name: str
    model: PitiModel
    stages: list[Stage]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def finetune(self) -> bool:
        """False for training-free plans: sample from `model` as it is."""
        return bool(self.stages)

    def stage_index(self, step: int) -> int:
        return common.stage_index(self.stages, step)

    def apply_stage(self, step: int) -> int:
        """Set `requires_grad` for the stage active at `step`; returns its index."""
        if not self.stages:
            set_trainable(self.model, nothing)
            return -1
        i = self.stage_index(step)
        set_trainable(self.model, self.stages[i].train)
        return i


Recipe = Callable[..., TransferPlan]
# Recipes take (source, target_classes, generic); every other parameter is an option.
RECIPES = common.RecipeRegistry("PITI", positional=3)
register = RECIPES.register


def recipe_options(name: str) -> list[str]:
    """The keyword options recipe `name` takes; `build_plan` refuses any other."""
    return RECIPES.options(name)


def build_plan(name: str, source: PitiModel | None, target_classes: int,
               generic: PitiModel | None = None, **options: Any) -> TransferPlan:
    """The plan for recipe `name` (see RECIPES). Input models are copied, never modified.
    New parameters are drawn from `seed` (default 0) without touching the caller's RNG, so
    every DDP rank and a resumed run build the same plan."""
    recipe = RECIPES.get_recipe(name)
    allowed = recipe_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"PITI transfer method {name!r}: unknown option(s) {unknown}; it "
                         f"takes {allowed}")
    if target_classes < 1:
        raise ValueError(f"PITI transfer method {name!r}: target_classes must be ≥ 1, got "
                         f"{target_classes}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(options.get("seed", 0)))
        plan = recipe(source, target_classes, generic, **options)
    plan.options = {"method": name, **options}
    plan.apply_stage(0)
    return plan


def _need(model: PitiModel | None, method: str, what: str = "a source PITI model") -> PitiModel:
    if model is None:
        raise ValueError(f"PITI transfer method {method!r} needs {what}")
    return model


def fixdec_trainable(model: PitiModel, first_layer: bool) -> NamePredicate:
    """FixDec (paper §3.3): A, the prompts and the encoder's last CNN block; plus conv1 when
    it was re-initialised (without A it is new and must learn the target classes)."""
    cnn = model.encoder.cnn
    parts = ["encoder.affinity", "encoder.prompts",
             *(f"encoder.cnn.{n}" for n in cnn.last_block_names())]
    if first_layer:
        parts.append("encoder.cnn.conv1")
    return under(*parts)


@register("cat")
def cat(source: PitiModel | None, target_classes: int, generic: PitiModel | None,
        affinity: Any | None = None, use_affinity: bool = True,
        prompt_count: int = DEFAULT_PROMPT_COUNT, fix_decoder: bool = True,
        seed: int = 0) -> TransferPlan:
    """CAT-PITI (paper §3.3) with the Table 5 switches (module docstring)."""
    source = _need(source, "cat")
    if affinity is not None and not use_affinity:
        raise ValueError("PITI transfer method 'cat': affinity given with use_affinity=False")
    if prompt_count < 0:
        raise ValueError(f"PITI transfer method 'cat': prompt_count must be ≥ 0, got "
                         f"{prompt_count}")
    model = (cat_model(source, target_classes, affinity, seed=seed) if use_affinity
             else reinit_mask_input(source, target_classes, seed=seed))
    model = with_prompts(model, prompt_count, seed=seed)
    train = (fixdec_trainable(model, first_layer=not use_affinity) if fix_decoder
             else everything)
    return TransferPlan("cat", model, [Stage(None, train)])


@register("finetune_all")
def finetune_all(source: PitiModel | None, target_classes: int, generic: PitiModel | None,
                 seed: int = 0) -> TransferPlan:
    """Finetune every layer of the source PITI, first encoder layer re-initialised (§4.1)."""
    plan = cat(_need(source, "finetune_all"), target_classes, generic, use_affinity=False,
               prompt_count=0, fix_decoder=False, seed=seed)
    plan.name = "finetune_all"
    return plan


@register("from_glide")
def from_glide(source: PitiModel | None, target_classes: int, generic: PitiModel | None,
               stage1_iters: int = 1000, seed: int = 0) -> TransferPlan:
    """Encoder from scratch on a generic decoder (§4.1); stage 1 the encoder alone."""
    generic = _need(generic, "from_glide", "`generic`: a model whose decoder was trained "
                    "without masks (GLIDE; at the embedded scale, a decoder pretrained on "
                    "source images with the empty mask only)")
    if stage1_iters < 0:
        raise ValueError(f"PITI transfer method 'from_glide': stage1_iters must be ≥ 0, got "
                         f"{stage1_iters}")
    model = from_generic(generic, target_classes, seed=seed)
    stages = [Stage(stage1_iters, under("encoder")), Stage(None, everything)]
    return TransferPlan("from_glide", model, stages if stage1_iters else stages[1:])


@register("training_free")
def training_free(source: PitiModel | None, target_classes: int, generic: PitiModel | None,
                  affinity: Any | None = None, seed: int = 0) -> TransferPlan:
    """A only, no finetuning (§4.3, Table 3); `affinity` None -> the random A."""
    model = cat_model(_need(source, "training_free"), target_classes, affinity, seed=seed)
    return TransferPlan("training_free", model.eval(), [])

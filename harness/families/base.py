"""The model-family seam: what the trial code needs from a model family (OASIS, PITI).

A family glues one library package (`cat_models.oasis`, `cat_models.piti`) to the harness:
it opens the source model a study's source stage produced, names its finetuning recipes
and their options (from the package's own registry), runs one finetuning with a report
callback, an evaluation hook and checkpoints (save / resume), samples images for a batch of
label maps, and builds the training-free transfer (A in front of the source model). The
trial code (`harness.trial`) calls only this interface, so it never knows which family runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cat_models.recipes import declared_recipes

if TYPE_CHECKING:        # annotations only: validating a study imports the families, not torch
    import torch

Evaluate = Callable[["torch.nn.Module", int], dict[str, Any]]
OnReport = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class FinetuneJob:
    """One finetuning run as the trial code sets it up.

    `on_report` gets the training loop's reports (every `eval_every` iterations at least,
    holding the evaluation's metrics and `checkpoint` where one was written); `evaluate(model,
    step)` scores a model (the EMA one); checkpoints go to `checkpoint_dir/latest.pt` (rank 0
    passes a folder, the other DDP ranks None) and `restore_file` continues from one.
    """

    art: Any                      # harness.stages.Artifacts
    trial: Any                    # harness.trial.TrialSpec
    source: Any                   # the family's source model, None for recipes that need none
    data: Any                     # the few-shot training set
    options: dict[str, Any]       # the recipe's options (affinity included)
    iterations: int
    device: str
    checkpoint_dir: str | None
    restore_file: Path | None
    on_report: OnReport
    evaluate: Evaluate


class ModelFamily(ABC):
    """A model family; one instance per family in `harness.families.FAMILIES`."""

    name: ClassVar[str]
    # The library module holding the family's recipe registry, and the registry's name there.
    RECIPE_MODULE: ClassVar[str]
    RECIPE_REGISTRY: ClassVar[str]
    # Trial settings handed to the recipes that declare the option: recipe option -> field
    # of the trial's settings (`TrialSpec.setting`).
    RECIPE_SETTINGS: ClassVar[dict[str, str]] = {}
    # The training loop's loss values a trial forwards with each evaluation report.
    LOSS_KEYS: ClassVar[tuple[str, ...]] = ()
    # Recipes that train nothing (a study reaches them with `training_free: true`).
    TRAINING_FREE_RECIPES: ClassVar[tuple[str, ...]] = ()

    def recipes(self) -> list[str]:
        """The finetuning recipes' names, from the library's registry (read from its source
        until it is imported: naming recipes loads no network)."""
        return list(declared_recipes(self.RECIPE_MODULE, self.RECIPE_REGISTRY))

    def recipe_options(self, recipe: str) -> list[str]:
        """Options recipe `recipe` takes (from its registry), `seed` included."""
        options = declared_recipes(self.RECIPE_MODULE, self.RECIPE_REGISTRY)
        if recipe not in options:
            raise KeyError(f"{self.name} transfer method {recipe!r} unknown; choose from "
                           f"{sorted(options)}")
        return list(options[recipe])

    def trial_settings(self, study: Any, params: Any) -> Any:
        """The family's own settings of one trial (its study block with the trial's searched
        values applied); None for a family without any."""
        return None

    def needs_source(self, recipe: str) -> bool:
        """Whether the recipe starts from the source model (OASIS 'scratch' does not)."""
        return True

    @abstractmethod
    def open_source(self, art: Any) -> Any:
        """The source model the study's source stage produced (or the user's checkpoint)."""

    @abstractmethod
    def source_classes(self, source: Any) -> int:
        """C_S: the source model's class count (rows of A)."""

    @abstractmethod
    def finetune(self, job: FinetuneJob) -> None:
        """Run the recipe `job.trial.method.baseline` with `job.options`."""

    @abstractmethod
    def sample(self, model: torch.nn.Module, labels: torch.Tensor, seed: int,
               trial: Any) -> torch.Tensor:
        """Images [B, 3, H, W] in [-1, 1] for label maps [B, H, W] (0 = unlabeled)."""

    @abstractmethod
    def training_free(self, source: Any, affinity: Any, trial: Any) -> torch.nn.Module:
        """The source model behind A (C_S x C_T), no finetuning (paper Table 3)."""

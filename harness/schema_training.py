"""The study schema's `training` section: each trial's finetuning budget and settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from harness.schema_base import Strict


class TrainingSpec(Strict):
    """The finetuning budget and settings of each trial (OASIS defaults for the rest).

    Every field but the evaluation schedule (`UNSEARCHABLE`) is a trial parameter a study may
    sweep in `search.space`; a trial's values are `TrainingSpec.for_trial(params)`.
    """

    iterations: Annotated[int, Field(gt=0)] = 600
    stage1_iterations: Annotated[int, Field(ge=0)] = 200
    batch_size: Annotated[int, Field(gt=0)] = 8
    lr_g: Annotated[float, Field(gt=0)] = 1e-4
    lr_d: Annotated[float, Field(gt=0)] = 4e-4
    freeze_d: Annotated[int, Field(ge=0, le=9)] = 0
    labelmix_lambda: Annotated[float, Field(ge=0)] = 10.0
    ema_decay: Annotated[float, Field(ge=0, lt=1)] | None = None   # None: the model's own
    affinity_temperature: Annotated[float, Field(gt=0)] | None = None
    affinity_top_k: Annotated[int, Field(gt=0)] | None = None
    eval_every: Annotated[int, Field(gt=0)] = 200
    checkpoint_every: Annotated[int, Field(gt=0)] = 200
    amp: bool = True  # used on CUDA only
    # OASIS: differentiable augmentation of D's inputs, label maps alike (comma-separated
    # names of cat_models.oasis.config.D_AUGMENT_POLICIES); "" = none, the paper's setting.
    d_augment: str = ""

    @field_validator("d_augment")
    @classmethod
    def _known_policies(cls, value: str) -> str:
        from cat_models.oasis.config import parse_augment_policy

        return ",".join(parse_augment_policy(value))

    @model_validator(mode="after")
    def _stages_fit(self) -> TrainingSpec:
        if self.stage1_iterations > self.iterations:
            raise ValueError(f"stage1_iterations ({self.stage1_iterations}) exceeds "
                             f"iterations ({self.iterations})")
        if self.checkpoint_every % self.eval_every:
            raise ValueError(f"checkpoint_every ({self.checkpoint_every}) must be a multiple of "
                             f"eval_every ({self.eval_every}): checkpoints travel with the "
                             "evaluation reports")
        return self

    def for_trial(self, params: Mapping[str, Any]) -> TrainingSpec:
        """These settings with a trial's searched values (Ray Tune's params) applied."""
        return self.model_copy(update={k: params[k] for k in SEARCHABLE if k in params})


# When a trial evaluates and checkpoints, and its precision, are not what a search compares.
UNSEARCHABLE = ("eval_every", "checkpoint_every", "amp")
# Trial parameters a study may sweep: the training settings (affinity post-processing included).
SEARCHABLE = tuple(k for k in TrainingSpec.model_fields if k not in UNSEARCHABLE)

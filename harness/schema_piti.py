"""The study schema's `piti` block: the PITI architecture, source pretraining, finetuning and
sampling settings of a `model: piti` study (ignored by OASIS studies, which may not set it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from harness.schema_base import Strict, known_name

# The `piti` settings a study may sweep in `search.space` (trial parameters).
PITI_SEARCHABLE = ("prompt_count", "guidance_scale", "sampling_steps", "sampler")
# Training-section fields a PITI trial does not read (OASIS's discriminator and generator
# settings): searching them in a PITI study is an error.
PITI_IGNORES = ("lr_g", "lr_d", "freeze_d", "labelmix_lambda", "d_augment")


def _pretrain_default(name: str) -> Any:
    """A default of the library's PITI source-pretraining settings (`PRETRAIN_SETTINGS`)."""
    from cat_models.piti.settings import PRETRAIN_SETTINGS

    return getattr(PRETRAIN_SETTINGS, name)


class PitiPretrainSpec(Strict):
    """Source pretraining on the source dataset (`pretrain_piti`); null fields take the
    library's `PRETRAIN_SETTINGS` (`cat_models.piti.settings`, where they are measured), the
    iteration count is the embedded-scale budget."""

    iterations: Annotated[int, Field(gt=0)] = 800
    batch_size: Annotated[int, Field(gt=0)] | None = None
    lr: Annotated[float, Field(gt=0)] | None = None
    ema_decay: Annotated[float, Field(ge=0, lt=1)] | None = None
    uncond_p: Annotated[float, Field(gt=0, le=1)] | None = None
    lr_schedule: str | None = None     # settings.LR_SCHEDULES; PitiTrainConfig.lr_at
    lr_final: Annotated[float, Field(ge=0, le=1)] | None = None
    seed: int = 0

    @field_validator("lr_schedule")
    @classmethod
    def _known_schedule(cls, v: str | None) -> str | None:
        from cat_models.piti.settings import LR_SCHEDULES

        return None if v is None else known_name(v, LR_SCHEDULES, "learning-rate schedule")

    def train_config(self) -> dict[str, Any]:
        """`PitiTrainConfig` fields of the pretraining run: every field but the run's length
        and seed, the library's default where null."""
        names = [n for n in type(self).model_fields if n not in ("iterations", "seed")]
        return {n: getattr(self, n) if getattr(self, n) is not None else _pretrain_default(n)
                for n in names}


class PitiSpec(Strict):
    """The PITI model family's settings (see docs/piti.md, "harness")."""

    preset: str = "embedded"                  # cat_models.piti.config.PRESETS
    overrides: dict[str, Any] = Field(default_factory=dict)   # PitiConfig fields
    pretrain: PitiPretrainSpec = PitiPretrainSpec()
    lr: Annotated[float, Field(gt=0)] = 1e-4  # finetuning AdamW learning rate
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.99   # unless training.ema_decay is set
    uncond_p: Annotated[float, Field(ge=0, le=1)] = 0.2     # classifier-free mask dropout
    prompt_count: Annotated[int, Field(ge=0)] | None = None  # None: the recipe's default
    # PITI's: 100 respaced ancestral steps (deterministic samplers score far lower on an
    # embedded-scale model: benchmarks/RESULTS_piti.md, "Sampling")
    sampler: str = "ddpm"
    sampling_steps: int | str = 100
    guidance_scale: float = 1.3

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        from cat_models.piti.config import PRESETS

        return known_name(v, sorted(PRESETS), "PITI preset")

    @model_validator(mode="after")
    def _sampling(self) -> PitiSpec:
        from cat_models.piti.settings import SamplerSettings

        try:
            SamplerSettings(self.sampler, self.sampling_steps, self.guidance_scale)
        except ValueError as err:   # the library's message names its field; name ours
            text = str(err).replace("SamplerSettings.steps", "sampling_steps").replace(
                "SamplerSettings.", "")
            raise ValueError(text) from None
        return self

    def config(self, num_classes: int, resolution: int):
        """The source model's `PitiConfig`: the preset for `num_classes` at `resolution`."""
        from cat_models.piti.config import preset

        return preset(self.preset, **{"num_classes": num_classes, "resolution": resolution,
                                      **self.overrides})

    def for_trial(self, params: Mapping[str, Any]) -> PitiSpec:
        """These settings with a trial's searched values applied."""
        return self.model_copy(update={k: params[k] for k in PITI_SEARCHABLE if k in params})

"""PITI's settings objects, plain dataclasses checked without torch: one sampling stage's
options (`SamplerSettings`) and the optimisation settings of training (`PitiTrainConfig`,
with the measured source-pretraining defaults `PRETRAIN_SETTINGS`).

They live apart from sampling.py and train.py (which import and re-export them) so that a
study's `piti` block is validated without importing torch and diffusers. The sampler names
are those of `sampling.SAMPLERS` (the builders), read without importing it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from cat_models.piti.schedules import (
    BASE_SCHEDULE,
    FAST27,
    NUM_TIMESTEPS,
    SCHEDULES,
    space_timesteps,
)
from cat_models.registered import assigned_names


def sampler_names() -> list[str]:
    """The samplers `cat_models.piti.sampling.SAMPLERS` builds (its keys)."""
    return assigned_names("cat_models.piti.sampling", "SAMPLERS")


@dataclass(frozen=True)
class SamplerSettings:
    """One stage's sampling options. `steps`: a respacing (int, "a,b,c", "ddimN", "fast27")."""

    sampler: str = "ddpm"
    steps: int | str = 100
    guidance_scale: float = 1.3
    noise_temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.sampler not in sampler_names():
            raise ValueError(f"SamplerSettings.sampler: {self.sampler!r} unknown; choose "
                             f"from {sorted(sampler_names())}")
        if not (self.guidance_scale == self.guidance_scale and abs(self.guidance_scale) < 1e6):
            raise ValueError(f"SamplerSettings.guidance_scale: a finite number, got "
                             f"{self.guidance_scale}")
        try:   # the respacing is checked against PITI's 1,000 steps here, again when applied
            space_timesteps(NUM_TIMESTEPS, self.steps)
        except ValueError as err:
            raise ValueError(f"SamplerSettings.steps: {err}") from err
        if not 0.0 < self.noise_temperature <= 10.0:
            raise ValueError(f"SamplerSettings.noise_temperature: in (0, 10], got "
                             f"{self.noise_temperature}")


BASE_SETTINGS = SamplerSettings()   # PITI: 100 respaced ancestral steps, guidance 1.3
UPSAMPLER_SETTINGS = SamplerSettings("ddpm", FAST27, 1.0, 0.997)


LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class PitiTrainConfig:
    """Optimisation settings; `batch_size` is the global batch. Defaults are PITI's base-model
    finetuning scripts: AdamW at 3.5e-5 (its second stage: 2e-5), no weight decay, EMA 0.9999,
    16 per GPU on 8 GPUs, `uncond_p` 0.2 (its second stage; the first uses 0), cosine schedule.
    Its upsampler script: lr 1e-5, batch 4, `uncond_p` 0, linear schedule, low_res 64."""

    batch_size: int = 128
    lr: float = 3.5e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    ema_decay: float = 0.9999
    uncond_p: float = 0.2
    schedule: str = BASE_SCHEDULE
    num_timesteps: int = NUM_TIMESTEPS
    image_size: tuple[int, int] | None = None     # the model's images (default: the data's)
    low_res_size: tuple[int, int] | None = None   # upsampler: its low_res input size
    amp: bool = False                             # bf16 autocast, CUDA only
    # the learning rate over a run of N steps: "constant" (PITI's), or "cosine" from `lr` at
    # step 0 down to `lr * lr_final` at step N (half a cosine period; `lr_at`)
    lr_schedule: str = "constant"
    lr_final: float = 0.0

    def __post_init__(self) -> None:
        for name in ("image_size", "low_res_size"):
            value = getattr(self, name)
            if value is not None:
                value = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
                if len(value) != 2 or min(value) < 1:
                    raise ValueError(f"PitiTrainConfig.{name}: (height, width) >= 1, got {value}")
                object.__setattr__(self, name, value)
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        checks = [("batch_size", self.batch_size >= 1, ">= 1"), ("lr", self.lr > 0, "> 0"),
                  ("weight_decay", self.weight_decay >= 0, ">= 0"),
                  ("ema_decay", 0 <= self.ema_decay < 1, "in [0, 1)"),
                  ("uncond_p", 0 <= self.uncond_p <= 1, "in [0, 1]"),
                  ("num_timesteps", self.num_timesteps >= 2, ">= 2"),
                  ("schedule", self.schedule in SCHEDULES, f"one of {list(SCHEDULES)}"),
                  ("lr_schedule", self.lr_schedule in LR_SCHEDULES,
                   f"one of {list(LR_SCHEDULES)}"),
                  ("lr_final", 0 <= self.lr_final <= 1, "in [0, 1]")]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"PitiTrainConfig.{name}: expected {expected}, got "
                                 f"{getattr(self, name)!r}")

    def lr_at(self, step: int, iterations: int) -> float:
        """The learning rate of the update that follows `step` finished steps of a run of
        `iterations` steps (a function of the step alone, so a resumed run continues it)."""
        if self.lr_schedule == "constant" or iterations <= 1:
            return self.lr
        progress = min(max(step, 0), iterations) / iterations
        scale = self.lr_final + (1 - self.lr_final) * 0.5 * (1 + math.cos(math.pi * progress))
        return self.lr * scale

    def replace(self, **changes: Any) -> PitiTrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Source pretraining of the `embedded` preset from scratch on the embedded benchmark (32 px,
# 2 CPU cores; benchmarks/RESULTS_piti.md, source quality). lr 1e-3: measured better than
# PITI's finetuning 3.5e-5 from scratch (ε-MSE after 150 steps 0.135 vs 0.755,
# docs/piti_diffusion.md), with a cosine decay to 0 over the run: the source segmenter scores
# 42.8% mIoU on the 800-step model's samples against 38.6% at a constant 1e-3 (all 120
# validation maps, ancestral 100 steps). Batch 8: the step the preset is sized for (~0.45 s
# on one idle core). EMA 0.995: a ~200-step horizon, so that after the ~800 steps that fit
# in the stage's budget the initial weights keep < 2 % of the average (0.999 would keep 45 %);
# early points of a curve want a short EMA instead (after 100 steps 0.995 still holds 61 %
# of the random init: 0.7 % vs 6.7 % mIoU with 0.9, same weights).
# uncond_p 0.2: PITI's second stage (guided sampling needs it > 0).
PRETRAIN_SETTINGS = PitiTrainConfig(batch_size=8, lr=1e-3, ema_decay=0.995, uncond_p=0.2,
                                    lr_schedule="cosine", lr_final=0.0)

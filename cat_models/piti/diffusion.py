"""The Gaussian diffusion process PITI trains and samples with (GLIDE / improved DDPM).

Paper §3.3 adopts PITI, whose base (64 px) and upsampler (64 -> 256 px) models are GLIDE
diffusion models: 1,000 steps, the cosine schedule (`squaredcos_cap_v2`) for the base and the
linear one for the upsampler, ε-prediction with a *learned-range* variance (`learn_sigma=True`:
the model's second half of channels, v in [-1, 1], interpolates the log variance between the
clipped posterior variance β̃_t and β_t, Nichol & Dhariwal 2021, eq. 15).

`GaussianDiffusion` holds one discrete process as float64 tensors and the formulas the hybrid
loss (losses.py) and the tests need: q(x_t | x_0), the posterior q(x_{t-1} | x_t, x_0) and the
model's p(x_{t-1} | x_t). The betas come from diffusers' `DDPMScheduler`, so the schedule is
the one diffusers' samplers step through (sampling.py builds them from these betas).

Respacing (`space_timesteps`, `GaussianDiffusion.respace`) is GLIDE's: keep a subset S of the
original steps and recompute β'_i = 1 - ᾱ_{s_i} / ᾱ_{s_{i-1}}, so the respaced chain has the
same marginals at the kept steps; the model is still called with the original timestep s_i
(`timesteps`). Where this differs from diffusers and what is done about it:

- diffusers stores betas in float32 (GLIDE: float64). The betas are taken as diffusers rounds
  them (relative error ≤ 6e-8) and everything derived from them is computed in float64.
- GLIDE's `rescale_timesteps` feeds the model t·1000/T_original as a float; with T = 1,000
  original steps that is the integer timestep itself, which is what the model gets here.
- diffusers' own respacing (`set_timesteps`) keeps the 1,000-step betas and skips steps; its
  DDIM derives the previous step as t - T // n, which is not the previous kept step for
  GLIDE's spacing. Samplers are therefore built on the respaced betas (one scheduler step per
  kept step), exactly as GLIDE's `SpacedDiffusion` runs; see sampling.py.
- For a single step GLIDE's spacing keeps t = 0, which would start from pure noise as if it
  were almost clean; `space_timesteps(T, 1)` keeps t = T - 1 instead (start from noise,
  predict x_0 once).
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

# The process's names and numbers live in schedules.py (no torch: a study's settings are
# validated against them without loading the networks); re-exported from here.
from cat_models.piti.schedules import (  # noqa: F401
    BASE_SCHEDULE,
    FAST27,
    NUM_TIMESTEPS,
    SCHEDULES,
    UPSAMPLER_SCHEDULE,
    ScheduleName,
    space_timesteps,
)


def _extract(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] reshaped to broadcast over `like` ([B] -> [B, 1, 1, ...]), in like's dtype."""
    out = values.to(like.device)[t.to(like.device).long()].to(like.dtype)
    return out.reshape(-1, *([1] * (like.dim() - 1)))


class GaussianDiffusion:
    """One discrete diffusion: betas [T] and the original timestep of each of its T steps."""

    def __init__(self, betas: torch.Tensor, timesteps: torch.Tensor | None = None) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() == 0 or not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError(f"GaussianDiffusion: betas must be non-empty and in (0, 1], got "
                             f"min {float(betas.min()) if betas.numel() else 'n/a'}")
        if timesteps is None:
            timesteps = torch.arange(betas.numel())
        timesteps = torch.as_tensor(timesteps, dtype=torch.long).flatten()
        if timesteps.numel() != betas.numel():
            raise ValueError(f"GaussianDiffusion: {timesteps.numel()} timesteps for "
                             f"{betas.numel()} betas")
        self.betas = betas
        self.timesteps = timesteps
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.alphas_cumprod_prev = torch.cat([betas.new_ones(1), self.alphas_cumprod[:-1]])
        self.posterior_variance = (betas * (1.0 - self.alphas_cumprod_prev)
                                   / (1.0 - self.alphas_cumprod))
        # β̃_0 = 0: GLIDE clips the log at t = 0 to β̃_1 (with a single step, to β_0). It only
        # matters for the t = 0 likelihood term; no noise is added at t = 0 when sampling.
        first = self.posterior_variance[1:2] if betas.numel() > 1 else betas[:1]
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([first, self.posterior_variance[1:]]))
        self.posterior_mean_coef1 = (betas * self.alphas_cumprod_prev.sqrt()
                                     / (1.0 - self.alphas_cumprod))
        self.posterior_mean_coef2 = ((1.0 - self.alphas_cumprod_prev) * (1.0 - betas).sqrt()
                                     / (1.0 - self.alphas_cumprod))

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.numel())

    @property
    def original_num_timesteps(self) -> int:
        """Steps of the process this one was respaced from (its own count if not respaced)."""
        return int(self.timesteps.max()) + 1

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The timestep the model sees for step indices t (the original, unrespaced one)."""
        return self.timesteps.to(t.device)[t.long()]

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t ~ q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I), with the given standard noise."""
        return (_extract(self.alphas_cumprod.sqrt(), t, x0) * x0
                + _extract((1.0 - self.alphas_cumprod).sqrt(), t, x0) * noise)

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and clipped log variance of q(x_{t-1} | x_t, x_0)."""
        mean = (_extract(self.posterior_mean_coef1, t, x_t) * x0
                + _extract(self.posterior_mean_coef2, t, x_t) * x_t)
        return mean, _extract(self.posterior_log_variance_clipped, t, x_t).expand_as(x_t)

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_0 = (x_t - √(1 - ᾱ_t) ε) / √ᾱ_t."""
        return (_extract((1.0 / self.alphas_cumprod).sqrt(), t, x_t) * x_t
                - _extract((1.0 / self.alphas_cumprod - 1.0).sqrt(), t, x_t) * eps)

    def learned_log_variance(self, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """GLIDE's learned range: log σ² = f·log β_t + (1 - f)·log β̃_t (clipped), f = (v+1)/2."""
        frac = (v + 1.0) / 2.0
        max_log = _extract(torch.log(self.betas), t, v)
        min_log = _extract(self.posterior_log_variance_clipped, t, v)
        return frac * max_log + (1.0 - frac) * min_log

    def p_mean_log_variance(self, model_output: torch.Tensor, x_t: torch.Tensor,
                            t: torch.Tensor, clip_x0: bool = False
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, log variance, x_0 prediction) of p(x_{t-1} | x_t) for a [B, 2C, ...] output.

        The mean is the posterior mean at the predicted x_0 (clipped to [-1, 1] when sampling,
        not in the loss, as in GLIDE).
        """
        channels = x_t.shape[1]
        if model_output.shape[1] != 2 * channels:
            raise ValueError(f"model output has {model_output.shape[1]} channels; a learned-"
                             f"variance model gives 2 x {channels} (ε, then v)")
        eps, v = model_output[:, :channels], model_output[:, channels:]
        x0 = self.predict_x0(x_t, t, eps)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        mean, _ = self.q_posterior(x0, x_t, t)
        return mean, self.learned_log_variance(v, t), x0

    def respace(self, spec: int | str) -> GaussianDiffusion:
        """The process restricted to `space_timesteps(T, spec)` (GLIDE's `SpacedDiffusion`)."""
        keep = space_timesteps(self.num_timesteps, spec)
        cumprod = self.alphas_cumprod[list(keep)]
        previous = torch.cat([cumprod.new_ones(1), cumprod[:-1]])
        return GaussianDiffusion(1.0 - cumprod / previous, self.timesteps[list(keep)])


def make_diffusion(schedule: ScheduleName = BASE_SCHEDULE,
                   num_timesteps: int = NUM_TIMESTEPS) -> GaussianDiffusion:
    """The PITI process with diffusers' betas for `schedule` (1,000 steps by default).

    diffusers' linear schedule is β from 1e-4 to 0.02 whatever T is; GLIDE scales both ends by
    1000 / T. They agree at T = 1,000 (PITI's); other T keep GLIDE's scaling here.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"noise schedule {schedule!r} unknown; choose from {list(SCHEDULES)}")
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be at least 1, got {num_timesteps}")
    scale = 1000.0 / num_timesteps if schedule == "linear" else 1.0
    scheduler = DDPMScheduler(num_train_timesteps=num_timesteps, beta_schedule=schedule,
                              beta_start=1e-4 * scale, beta_end=0.02 * scale)
    return GaussianDiffusion(scheduler.betas)

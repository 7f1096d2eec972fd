"""Sampling PITI images for a batch of label maps: classifier-free guidance, three samplers,
an optional upsampler stage (paper §3.3; PITI's `glide_util.sample`).

The model is any module called as `model(x_t, t, mask, low_res=None) -> [B, 2C, H, W]`
(ε in the first C channels, the learned-range variance v in the rest), with `mask` a float
one-hot map whose last channel is the "empty" (unconditional) label.

Classifier-free guidance (GLIDE): ε̂ = ε(x_t, ∅) + s·(ε(x_t, mask) − ε(x_t, ∅)), ∅ = the empty
mask, both halves in one batched call; the variance channels are the conditional ones. At s = 1
this is ε(x_t, mask) exactly, so the unconditional half is not computed.

Samplers are diffusers' schedulers, built on the *respaced* betas of the chosen step count
(GLIDE's spacing, diffusion.py) and stepped once per kept step, the model seeing the original
timestep. How each is configured to behave as GLIDE does:
- "ddpm": `DDPMScheduler(variance_type="learned_range", clip_sample=True)` — ancestral
  sampling with σ² interpolated from v, x_0 clipped to [-1, 1] (GLIDE `clip_denoised`). Its
  learned range uses log β̃_t unclipped; GLIDE clips only at t = 0, where no noise is added, so
  the chains agree. PITI's default: 100 steps, guidance 1.3.
- "ddim": `DDIMScheduler(set_alpha_to_one=True)`, η = 0, `use_clipped_model_output=True`
  (GLIDE re-derives ε from the clipped x_0; diffusers' default would not). Deterministic.
- "dpmsolver++": `DPMSolverMultistepScheduler(algorithm_type="dpmsolver++")`, 2nd order,
  the last step to σ = 0; `thresholding=True` with `sample_max_value=1` is plain clipping of
  x_0 to [-1, 1] (the threshold s is clamped to [1, 1]), GLIDE's `clip_denoised`.
diffusers builds ᾱ from float32 betas; respaced betas close to 1 (the noisiest kept step of the
cosine schedule, 1 - 2e-9 for one step) then lose ᾱ entirely, so every scheduler gets the exact
ᾱ of the respaced process (cast once to float32) before it is used.

The upsampler stage follows PITI: the base samples quantised to 8 bits are its `low_res`,
the same masks condition it, no guidance, GLIDE's "fast27" respacing, initial noise × 0.997.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from torch import nn

from cat_models.piti.diffusion import (
    BASE_SCHEDULE,
    UPSAMPLER_SCHEDULE,
    GaussianDiffusion,
    make_diffusion,
)
from cat_models.piti.model import empty_mask

# The settings are plain dataclasses (settings.py: validated without torch); re-exported here.
from cat_models.piti.settings import (
    BASE_SETTINGS,
    UPSAMPLER_SETTINGS,
    SamplerSettings,
)

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def empty_mask_like(mask: torch.Tensor) -> torch.Tensor:
    """The unconditional mask of the same shape as `mask` (`cat_models.piti.model.empty_mask`)."""
    b, c, h, w = mask.shape
    return empty_mask(b, c - 1, h, w, device=mask.device).to(mask.dtype)


def guided_model(model: nn.Module, mask: torch.Tensor, scale: float,
                 low_res: torch.Tensor | None = None) -> ModelFn:
    """x_t, t -> the guided output [B, 2C, H, W] for `mask` at guidance `scale`."""
    if scale == 1.0:
        return lambda x, t: model(x, t, mask, low_res=low_res)
    both = torch.cat([mask, empty_mask_like(mask)])
    low_res_both = None if low_res is None else torch.cat([low_res, low_res])

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = model(torch.cat([x, x]), torch.cat([t, t]), both, low_res=low_res_both)
        cond, uncond = out.chunk(2)
        c = x.shape[1]
        eps = uncond[:, :c] + scale * (cond[:, :c] - uncond[:, :c])
        return torch.cat([eps, cond[:, c:]], dim=1)

    return guided


@dataclass(frozen=True)
class Sampler:
    """How one diffusers scheduler is built from the respaced betas and stepped."""

    build: Callable[[GaussianDiffusion], object]
    step_kwargs: dict
    reads_variance: bool    # False: only the ε channels are passed to `step`


def _ddpm(diffusion: GaussianDiffusion) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=diffusion.num_timesteps,
                         trained_betas=diffusion.betas.numpy(), variance_type="learned_range",
                         clip_sample=True, clip_sample_range=1.0, prediction_type="epsilon")


def _ddim(diffusion: GaussianDiffusion) -> DDIMScheduler:
    return DDIMScheduler(num_train_timesteps=diffusion.num_timesteps,
                         trained_betas=diffusion.betas.numpy(), clip_sample=True,
                         clip_sample_range=1.0, set_alpha_to_one=True,
                         prediction_type="epsilon")


def _dpmsolver(diffusion: GaussianDiffusion) -> DPMSolverMultistepScheduler:
    return DPMSolverMultistepScheduler(
        num_train_timesteps=diffusion.num_timesteps, trained_betas=diffusion.betas.numpy(),
        algorithm_type="dpmsolver++", solver_order=2, prediction_type="epsilon",
        thresholding=True, sample_max_value=1.0, variance_type="learned_range",
        final_sigmas_type="zero")


SAMPLERS: dict[str, Sampler] = {
    "ddpm": Sampler(_ddpm, {}, reads_variance=True),
    "ddim": Sampler(_ddim, {"eta": 0.0, "use_clipped_model_output": True},
                    reads_variance=False),
    "dpmsolver++": Sampler(_dpmsolver, {}, reads_variance=True),
}


def make_scheduler(diffusion: GaussianDiffusion, sampler: str):
    """A diffusers scheduler stepping every step of `diffusion` (already respaced)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler {sampler!r} unknown; choose from {sorted(SAMPLERS)}")
    scheduler = SAMPLERS[sampler].build(diffusion)
    cumprod = diffusion.alphas_cumprod.float()
    scheduler.alphas_cumprod = cumprod      # exact ᾱ (see module docstring)
    if isinstance(scheduler, DPMSolverMultistepScheduler):
        scheduler.alpha_t, scheduler.sigma_t = cumprod.sqrt(), (1 - cumprod).sqrt()
        scheduler.lambda_t = scheduler.alpha_t.log() - scheduler.sigma_t.log()
        scheduler.set_timesteps(timesteps=list(range(diffusion.num_timesteps))[::-1])
    else:
        scheduler.set_timesteps(diffusion.num_timesteps)
    return scheduler


def denoise(model_fn: ModelFn, noise: torch.Tensor, diffusion: GaussianDiffusion,
            sampler: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Run `sampler` over every step of `diffusion` from x_T = `noise`; returns x_0."""
    scheduler = make_scheduler(diffusion, sampler)
    spec = SAMPLERS[sampler]
    x = noise
    channels = x.shape[1]
    for index in scheduler.timesteps:
        t = diffusion.model_timesteps(index.reshape(1)).to(x.device).expand(x.shape[0])
        out = model_fn(x, t)
        if not spec.reads_variance:
            out = out[:, :channels]
        x = scheduler.step(out, int(index), x, generator=generator, return_dict=True,
                           **spec.step_kwargs).prev_sample
    return x


def _as_size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


@torch.no_grad()
def sample_images(model: nn.Module, masks: torch.Tensor,
                  diffusion: GaussianDiffusion | None = None, *,
                  settings: SamplerSettings = BASE_SETTINGS,
                  generator: torch.Generator | None = None, seed: int = 0,
                  size: int | tuple[int, int] | None = None, channels: int = 3,
                  batch_size: int | None = None,
                  upsampler: nn.Module | None = None,
                  upsampler_diffusion: GaussianDiffusion | None = None,
                  upsampler_settings: SamplerSettings = UPSAMPLER_SETTINGS,
                  upsampler_size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Images [B, channels, H, W] in [-1, 1] for one-hot `masks` [B, C_in, Hm, Wm].

    `size` is the base model's image size (default: the masks'); with an `upsampler` the
    result is at `upsampler_size` (default 4 x the base size, PITI's 64 -> 256). Noise comes
    from `generator` (default: a CPU generator seeded with `seed`), drawn batch by batch, so a
    call with the same seed and `batch_size` returns the same images. `diffusion` defaults to
    the 1,000-step base process (the upsampler's to the linear one); both are respaced here to
    their settings' `steps`. Models run in eval mode and get their previous mode back.
    """
    if masks.dim() != 4:
        raise ValueError(f"sample_images: masks must be one-hot [B, C_in, H, W], got shape "
                         f"{tuple(masks.shape)}")
    device = next(model.parameters()).device
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    base = (make_diffusion(BASE_SCHEDULE) if diffusion is None else diffusion).respace(
        settings.steps)
    h, w = _as_size(size) if size is not None else masks.shape[-2:]
    up = None
    if upsampler is not None:
        up = (make_diffusion(UPSAMPLER_SCHEDULE) if upsampler_diffusion is None
              else upsampler_diffusion).respace(upsampler_settings.steps)
        up_size = _as_size(upsampler_size) if upsampler_size is not None else (4 * h, 4 * w)
    step = batch_size or masks.shape[0]
    modes = [(m, m.training) for m in (model, upsampler) if m is not None]
    for m, _ in modes:
        m.eval()
    try:
        out = []
        for i in range(0, masks.shape[0], step):
            mask = masks[i:i + step].to(device)
            noise = torch.randn(mask.shape[0], channels, h, w, generator=gen)
            fn = guided_model(model, mask, settings.guidance_scale)
            x = denoise(fn, (noise * settings.noise_temperature).to(device), base,
                        settings.sampler, gen)
            if up is not None:
                # PITI hands the upsampler 8-bit images: truncate to 1/127.5 levels.
                low_res = (127.5 * (x.clamp(-1, 1) + 1.0)).int() / 127.5 - 1.0
                noise = torch.randn(mask.shape[0], channels, *up_size, generator=gen)
                fn = guided_model(upsampler, mask, upsampler_settings.guidance_scale,
                                  low_res=low_res)
                x = denoise(fn, (noise * upsampler_settings.noise_temperature).to(device),
                            up, upsampler_settings.sampler, gen)
            out.append(x.float().cpu())
    finally:
        for m, was_training in modes:
            m.train(was_training)
    return torch.cat(out)

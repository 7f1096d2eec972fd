"""Samplers (diffusers schedulers on respaced betas), guidance, determinism, upsampler stage."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cat_models.piti.diffusion import make_diffusion
from cat_models.piti.sampling import (
    SAMPLERS,
    SamplerSettings,
    empty_mask_like,
    guided_model,
    make_scheduler,
    sample_images,
)
from tests.piti.tiny_eps_model import TinyEpsModel, one_hot_masks

NUM_CLASSES = 3


def tiny_model(seed=0, **kwargs) -> TinyEpsModel:
    torch.manual_seed(seed)
    return TinyEpsModel(NUM_CLASSES + 1, **kwargs)


def label_masks(n=2, size=8, seed=0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, NUM_CLASSES + 1, (n, 1, 2, 2), generator=gen).float()
    labels = nn.functional.interpolate(coarse, size=(size, size)).long()[:, 0]
    return one_hot_masks(labels, NUM_CLASSES)


class Recorder(nn.Module):
    """Wraps a model and records what it is called with."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, x, t, mask, low_res=None):
        self.calls.append({"t": t.clone(), "mask": mask.clone(),
                           "low_res": None if low_res is None else low_res.clone()})
        return self.model(x, t, mask, low_res=low_res)


class ExactDenoiser(nn.Module):
    """The optimal ε for data that is a single image c: ε = (x_t − √ᾱ_t c) / √(1 − ᾱ_t)."""

    def __init__(self, target: torch.Tensor, schedule: str) -> None:
        super().__init__()
        self.target = nn.Parameter(target, requires_grad=False)
        self.abar = make_diffusion(schedule).alphas_cumprod

    def forward(self, x, t, mask, low_res=None):
        abar = self.abar[t].view(-1, 1, 1, 1)
        eps = (x.double() - abar.sqrt() * self.target) / (1 - abar).sqrt()
        return torch.cat([eps.float(), torch.zeros_like(x)], dim=1)


def test_ddpm_step_is_glides_ancestral_step_with_learned_range():
    diffusion = make_diffusion().respace(100)
    scheduler = make_scheduler(diffusion, "ddpm")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, generator=gen)
    out = torch.randn(2, 6, 4, 4, generator=gen)
    out[:, 3:] = out[:, 3:].tanh()
    for index in (99, 50, 1, 0):
        t = torch.full((2,), index)
        mean, log_var, x0 = diffusion.p_mean_log_variance(out, x, t, clip_x0=True)
        z = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(index))
        want = mean + (torch.exp(0.5 * log_var) * z if index > 0 else 0.0)
        got = scheduler.step(out, index, x,
                             generator=torch.Generator().manual_seed(index)).prev_sample
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(got, x0, atol=2e-5, rtol=1e-4)   # last step: the clipped x_0


def test_ddim_step_is_glides_deterministic_step():
    diffusion = make_diffusion("linear").respace(20)
    scheduler = make_scheduler(diffusion, "ddim")
    gen = torch.Generator().manual_seed(1)
    x, eps = torch.randn(2, 3, 4, 4, generator=gen), 3 * torch.randn(2, 3, 4, 4, generator=gen)
    for index in (19, 7, 0):
        abar = float(diffusion.alphas_cumprod[index])
        abar_prev = float(diffusion.alphas_cumprod_prev[index])
        x0 = ((x - (1 - abar) ** 0.5 * eps) / abar ** 0.5).clamp(-1, 1)
        eps_clipped = (x / abar ** 0.5 - x0) / (1 / abar - 1) ** 0.5   # GLIDE re-derives ε
        want = x0 * abar_prev ** 0.5 + (1 - abar_prev) ** 0.5 * eps_clipped
        got = scheduler.step(eps, index, x, **SAMPLERS["ddim"].step_kwargs).prev_sample
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


class NoiseLike(nn.Module):
    """ε = x_t + s·ε_inner: a model that has learnt x_T ≈ ε, whose x_0 predictions at
    t = T - 1 are O(1) instead of all clipped."""

    def __init__(self, inner: nn.Module, s: float) -> None:
        super().__init__()
        self.inner, self.s = inner, s

    def forward(self, x, t, mask, low_res=None):
        out = self.inner(x, t, mask, low_res=low_res)
        return torch.cat([x + self.s * out[:, :3], out[:, 3:]], dim=1)


@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
def test_ddim_with_one_step_is_the_models_x0_prediction(schedule):
    diffusion = make_diffusion(schedule)
    model = NoiseLike(tiny_model(), 0.5 * float(diffusion.alphas_cumprod[-1].sqrt()))
    masks = label_masks()
    images = sample_images(model, masks, diffusion, seed=4,
                           settings=SamplerSettings("ddim", 1, guidance_scale=1.0))
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    t = torch.full((2,), 999)
    with torch.no_grad():
        eps = model.eval()(noise, t, masks)[:, :3]
    x0 = diffusion.predict_x0(noise.double(), t, eps.double()).clamp(-1, 1).float()
    assert (x0.abs() < 1).float().mean() > 0.5
    # float32 arithmetic at ᾱ_999 (2e-9 for the cosine schedule) amplifies rounding by 1/√ᾱ
    tol = 1e-4 if schedule == "linear" else 5e-4
    torch.testing.assert_close(images, x0, atol=tol, rtol=0)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_recovers_the_data_from_the_exact_denoiser(sampler):
    target = torch.linspace(-0.9, 0.9, 3 * 8 * 8).reshape(1, 3, 8, 8)
    model = ExactDenoiser(target.double(), "squaredcos_cap_v2")
    images = sample_images(model, label_masks(), seed=0,
                           settings=SamplerSettings(sampler, 10, guidance_scale=1.0))
    torch.testing.assert_close(images, target.expand(2, -1, -1, -1), atol=1e-4, rtol=0)


def test_guidance_combines_conditional_and_empty_mask_predictions():
    model, masks = tiny_model(), label_masks()
    gen = torch.Generator().manual_seed(2)
    x, t = torch.randn(2, 3, 8, 8, generator=gen), torch.tensor([10, 900])
    with torch.no_grad():
        cond, uncond = model(x, t, masks), model(x, t, empty_mask_like(masks))
        empty = empty_mask_like(masks)
        assert empty[:, -1].min() == 1 and empty[:, :-1].max() == 0
        assert (cond - uncond).abs().max() > 1e-3                 # the mask matters
        torch.testing.assert_close(guided_model(model, masks, 1.0)(x, t), cond)
        for scale in (0.0, 1.3, 3.0):
            out = guided_model(model, masks, scale)(x, t)
            want = uncond[:, :3] + scale * (cond[:, :3] - uncond[:, :3])
            torch.testing.assert_close(out[:, :3], want)
            torch.testing.assert_close(out[:, 3:], cond[:, 3:])   # the conditional variance


def test_scale_one_samples_the_conditional_model_alone():
    recorder, masks = Recorder(tiny_model()), label_masks()
    images = sample_images(recorder, masks, seed=1, settings=SamplerSettings("ddpm", 5, 1.0))
    assert len(recorder.calls) == 5 and all(torch.equal(c["mask"], masks) for c in recorder.calls)
    assert sorted({int(c["t"][0]) for c in recorder.calls}) == [0, 250, 500, 749, 999]
    guided = sample_images(Recorder(tiny_model()), masks, seed=1,
                           settings=SamplerSettings("ddpm", 5, 1.3))
    assert not torch.allclose(images, guided)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_same_seed_same_images_in_range(sampler):
    model, masks = tiny_model(), label_masks(n=3)
    with torch.no_grad():
        model.conv_out.weight.mul_(10)   # push the x_0 predictions past ±1: clipping matters
    settings = SamplerSettings(sampler, 8)
    first = sample_images(model, masks, seed=3, settings=settings, batch_size=2)
    again = sample_images(model, masks, generator=torch.Generator().manual_seed(3),
                          settings=settings, batch_size=2)
    other = sample_images(model, masks, seed=4, settings=settings, batch_size=2)
    assert torch.equal(first, again) and not torch.allclose(first, other)
    assert first.shape == (3, 3, 8, 8) and first.abs().max() <= 1.0
    assert (first.abs() > 0.99).float().mean() > 0.01     # clipping was exercised
    assert model.training                                 # its mode is given back


def test_upsampler_stage_gets_quantised_base_samples_and_the_masks():
    model, masks = tiny_model(), label_masks()
    up = Recorder(tiny_model(seed=1, super_res=True))
    settings = SamplerSettings("ddim", 4)
    up_settings = SamplerSettings("ddpm", "2,1", 1.0, 0.997)
    images = sample_images(model, masks, seed=5, settings=settings, upsampler=up,
                           upsampler_settings=up_settings)
    assert images.shape == (2, 3, 32, 32) and images.abs().max() <= 1
    base = sample_images(model, masks, seed=5, settings=settings)
    quantised = (127.5 * (base + 1)).int() / 127.5 - 1
    assert len(up.calls) == 3                                  # "2,1": three respaced steps
    for call in up.calls:
        torch.testing.assert_close(call["low_res"], quantised)
        assert torch.equal(call["mask"], masks)                # no guidance at scale 1
    assert sorted(int(c["t"][0]) for c in up.calls) == [0, 499, 500]


def test_bad_sampler_inputs_are_refused():
    with pytest.raises(ValueError, match="SamplerSettings.sampler: 'euler' unknown"):
        SamplerSettings("euler")
    with pytest.raises(ValueError, match="SamplerSettings.steps: respacing 'ddim3000'"):
        SamplerSettings(steps="ddim3000")
    with pytest.raises(ValueError, match="noise_temperature"):
        SamplerSettings(noise_temperature=0.0)
    with pytest.raises(ValueError, match=r"masks must be one-hot \[B, C_in, H, W\]"):
        sample_images(tiny_model(), torch.zeros(5, 8, 8))

"""The diffusion process: schedules, respacing, q(x_t | x_0), posterior, learned range."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from cat_models.piti.diffusion import (
    GaussianDiffusion,
    make_diffusion,
    space_timesteps,
)


def glide_cosine_betas(T: int) -> np.ndarray:
    def alpha_bar(s):
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.array([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999)
                     for i in range(T)])


def test_schedules_are_glides_at_1000_steps():
    cosine = make_diffusion("squaredcos_cap_v2")
    assert cosine.num_timesteps == 1000
    np.testing.assert_allclose(cosine.betas.numpy(), glide_cosine_betas(1000), rtol=1e-6)
    assert cosine.betas[-1] == pytest.approx(0.999, rel=1e-6)   # the cap
    linear = make_diffusion("linear")
    np.testing.assert_allclose(linear.betas.numpy(), np.linspace(1e-4, 0.02, 1000), rtol=1e-6)
    # GLIDE scales the linear ends by 1000 / T for other step counts
    np.testing.assert_allclose(make_diffusion("linear", 100).betas.numpy(),
                               np.linspace(1e-3, 0.2, 100), rtol=1e-6)
    with pytest.raises(ValueError, match="noise schedule 'cosine' unknown"):
        make_diffusion("cosine")


def test_space_timesteps_follows_glide_spacing():
    # one section: evenly spread, both ends kept (round(i * 999 / 99) for 100 steps)
    assert space_timesteps(1000, 100) == tuple(round(i * 999 / 99) for i in range(100))
    assert space_timesteps(10, 4) == (0, 3, 6, 9)
    assert space_timesteps(10, "2,2") == (0, 4, 5, 9)           # two sections of 5
    assert space_timesteps(1000, "ddim50") == tuple(range(0, 1000, 20))
    assert space_timesteps(1000, "1000") == tuple(range(1000))
    fast = space_timesteps(1000, "fast27")
    assert len(fast) == 27 and 999 not in fast and 997 in fast and fast[0] == 0
    assert space_timesteps(1000, 1) == (999,)                   # start from pure noise
    for bad, message in (("0", "step count >= 1"), ("abc", "step count >= 1"),
                         (1001, "cannot take 1001 steps"), ("ddim3000", "no integer stride")):
        with pytest.raises(ValueError, match=message):
            space_timesteps(1000, bad)


def test_respacing_keeps_the_marginals_and_maps_timesteps():
    base = make_diffusion()
    spaced = base.respace(50)
    kept = list(space_timesteps(1000, 50))
    assert spaced.num_timesteps == 50 and spaced.timesteps.tolist() == kept
    torch.testing.assert_close(spaced.alphas_cumprod, base.alphas_cumprod[kept])
    assert spaced.model_timesteps(torch.tensor([0, 49])).tolist() == [0, 999]
    assert spaced.original_num_timesteps == 1000
    # respacing a respaced process composes (the map goes back to the original steps)
    twice = spaced.respace(5)
    assert twice.timesteps.tolist() == [kept[i] for i in space_timesteps(50, 5)]


def test_q_sample_matches_closed_form_and_diffusers_add_noise():
    diffusion = make_diffusion()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 8, 8, generator=gen) * 2 - 1
    noise = torch.randn(4, 3, 8, 8, generator=gen)
    t = torch.tensor([0, 10, 500, 999])
    out = diffusion.q_sample(x0, t, noise)
    abar = torch.cumprod(1 - diffusion.betas, 0)[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(out, abar.sqrt() * x0 + (1 - abar).sqrt() * noise)
    reference = DDPMScheduler(beta_schedule="squaredcos_cap_v2").add_noise(x0, noise, t)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)


def test_posterior_and_learned_range_variance():
    diffusion = make_diffusion()
    betas = diffusion.betas.numpy()
    abar = np.cumprod(1 - betas)
    abar_prev = np.append(1.0, abar[:-1])
    t = torch.tensor([0, 1, 400, 999])
    x0, x_t = torch.full((4, 1, 1, 1), 0.5), torch.full((4, 1, 1, 1), -0.25)
    mean, log_var = diffusion.q_posterior(x0, x_t, t)
    ti = t.numpy()
    coef1 = betas[ti] * np.sqrt(abar_prev[ti]) / (1 - abar[ti])
    coef2 = (1 - abar_prev[ti]) * np.sqrt(1 - betas[ti]) / (1 - abar[ti])
    np.testing.assert_allclose(mean.flatten().numpy(), coef1 * 0.5 - coef2 * 0.25, rtol=1e-5)
    tilde = betas * (1 - abar_prev) / (1 - abar)
    expected_log = np.log(np.where(ti == 0, tilde[1], tilde[ti]))   # clipped at t = 0
    np.testing.assert_allclose(log_var.flatten().numpy(), expected_log, rtol=1e-5)
    for v, weight in ((-1.0, 0.0), (1.0, 1.0), (0.0, 0.5), (0.5, 0.75)):
        out = diffusion.learned_log_variance(torch.full((4, 1, 1, 1), v), t).flatten()
        want = weight * np.log(betas[ti]) + (1 - weight) * expected_log
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-5)


def test_p_mean_uses_the_predicted_x0_and_checks_channels():
    diffusion = make_diffusion("linear")
    gen = torch.Generator().manual_seed(1)
    x_t = torch.randn(2, 3, 4, 4, generator=gen)
    out = torch.randn(2, 6, 4, 4, generator=gen)
    t = torch.tensor([3, 700])
    mean, log_var, x0 = diffusion.p_mean_log_variance(out, x_t, t, clip_x0=True)
    abar = diffusion.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    want_x0 = ((x_t - (1 - abar).sqrt() * out[:, :3]) / abar.sqrt()).clamp(-1, 1)
    torch.testing.assert_close(x0, want_x0)
    torch.testing.assert_close(mean, diffusion.q_posterior(want_x0, x_t, t)[0])
    torch.testing.assert_close(log_var, diffusion.learned_log_variance(out[:, 3:], t))
    with pytest.raises(ValueError, match="2 x 3"):
        diffusion.p_mean_log_variance(out[:, :3], x_t, t)


def test_bad_betas_are_refused():
    with pytest.raises(ValueError, match=r"betas must be non-empty and in \(0, 1\]"):
        GaussianDiffusion(torch.tensor([0.1, 0.0]))
    with pytest.raises(ValueError, match="3 timesteps for 2 betas"):
        GaussianDiffusion(torch.tensor([0.1, 0.2]), torch.arange(3))

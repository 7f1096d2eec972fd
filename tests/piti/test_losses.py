"""GLIDE's hybrid loss against values computed here with plain formulas (float64 numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cat_models.piti.diffusion import make_diffusion
from cat_models.piti.losses import hybrid_loss, vlb_terms

LN2 = math.log(2.0)


def _case(seed=0, t=(7, 0, 999)):
    gen = torch.Generator().manual_seed(seed)
    b = len(t)
    x0 = (torch.rand(b, 3, 2, 2, generator=gen) * 2 - 1)
    x0[:, 0, 0, 0], x0[:, 1, 0, 1] = -1.0, 1.0          # the open-ended edge bins at t = 0
    noise = torch.randn(b, 3, 2, 2, generator=gen)
    out = torch.randn(b, 6, 2, 2, generator=gen)
    out[:, 3:] = out[:, 3:].tanh()                      # v in [-1, 1] as a model would give
    return x0, noise, out, torch.tensor(t)


def _phi(z):
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def hand_hybrid(betas: np.ndarray, x0, noise, out, t) -> dict[str, np.ndarray]:
    """improved DDPM's L_hybrid written out elementwise."""
    x0, noise, out = (a.double().numpy() for a in (x0, noise, out))
    abar = np.cumprod(1 - betas)
    abar_prev = np.append(1.0, abar[:-1])
    tilde = betas * (1 - abar_prev) / (1 - abar)
    tilde_clipped = np.append(tilde[1], tilde[1:])
    result = {"mse": [], "vb": []}
    for i, ti in enumerate(t.tolist()):
        a, ap, beta = abar[ti], abar_prev[ti], betas[ti]
        x_t = math.sqrt(a) * x0[i] + math.sqrt(1 - a) * noise[i]
        eps, v = out[i, :3], out[i, 3:]
        result["mse"].append(np.mean((noise[i] - eps) ** 2))
        c1, c2 = beta * math.sqrt(ap) / (1 - a), (1 - ap) * math.sqrt(1 - beta) / (1 - a)
        x0_hat = (x_t - math.sqrt(1 - a) * eps) / math.sqrt(a)
        mean_p, mean_q = c1 * x0_hat + c2 * x_t, c1 * x0[i] + c2 * x_t
        frac = (v + 1) / 2
        logvar_p = frac * math.log(beta) + (1 - frac) * math.log(tilde_clipped[ti])
        logvar_q = math.log(tilde_clipped[ti])
        if ti > 0:
            kl = 0.5 * (-1 + logvar_p - logvar_q + np.exp(logvar_q - logvar_p)
                        + (mean_q - mean_p) ** 2 * np.exp(-logvar_p))
            result["vb"].append(kl.mean() / LN2)
            continue
        sd = np.exp(0.5 * logvar_p)
        logp = np.empty_like(x0[i])
        for idx in np.ndindex(x0[i].shape):
            x, m, s = x0[i][idx], mean_p[idx], sd[idx]
            upper = 1.0 if x > 0.999 else _phi((x - m + 1 / 255) / s)
            lower = 0.0 if x < -0.999 else _phi((x - m - 1 / 255) / s)
            logp[idx] = math.log(max(upper - lower, 1e-12))
        result["vb"].append(-logp.mean() / LN2)
    return {k: np.array(v) for k, v in result.items()}


@pytest.mark.parametrize("schedule", ["squaredcos_cap_v2", "linear"])
def test_hybrid_loss_matches_hand_computed_value(schedule):
    diffusion = make_diffusion(schedule)
    x0, noise, out, t = _case()
    x_t = diffusion.q_sample(x0, t, noise)
    terms = hybrid_loss(diffusion, out, x0, x_t, t, noise)
    want = hand_hybrid(diffusion.betas.numpy(), x0, noise, out, t)
    np.testing.assert_allclose(terms["mse"].numpy(), want["mse"], rtol=1e-5)
    np.testing.assert_allclose(terms["vb"].numpy(), want["vb"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(terms["loss"].numpy(), want["mse"] + want["vb"], rtol=1e-5)
    assert (terms["vb"] > 0).all()       # a KL / an NLL of a quantised value


def test_kl_vanishes_for_the_true_posterior():
    """ε̂ = ε and v = -1 (σ² = β̃_t): p equals q(x_{t-1} | x_t, x_0), so L_vb = 0."""
    diffusion = make_diffusion()
    x0, noise, _, t = _case(t=(1, 50, 700))
    out = torch.cat([noise, -torch.ones_like(noise)], dim=1)
    x_t = diffusion.q_sample(x0, t, noise)
    terms = hybrid_loss(diffusion, out, x0, x_t, t, noise)
    assert terms["mse"].abs().max() == 0
    assert terms["vb"].abs().max() < 1e-4


def test_vb_term_trains_only_the_variance_and_is_rescaled():
    diffusion = make_diffusion()
    x0, noise, out, t = _case(seed=3)
    x_t = diffusion.q_sample(x0, t, noise)
    out = out.clone().requires_grad_(True)
    terms = hybrid_loss(diffusion, out, x0, x_t, t, noise)
    grad_loss, = torch.autograd.grad(terms["loss"].sum(), out, retain_graph=True)
    grad_mse, = torch.autograd.grad(terms["mse"].sum(), out, retain_graph=True)
    grad_vb, = torch.autograd.grad(terms["vb"].sum(), out)
    torch.testing.assert_close(grad_loss[:, :3], grad_mse[:, :3])   # mean: MSE only
    assert grad_vb[:, :3].abs().max() == 0 and grad_vb[:, 3:].abs().max() > 0
    assert grad_mse[:, 3:].abs().max() == 0
    # without the stop-gradient the VLB would move the mean too
    undetached = vlb_terms(diffusion, out, x0, x_t, t).sum()
    assert torch.autograd.grad(undetached, out)[0][:, :3].abs().max() > 0
    # RESCALED_MSE: the VLB term is scaled by T / 1000 (here a 100-step process)
    short = make_diffusion(num_timesteps=100)
    x_t = short.q_sample(x0, t % 100, noise)
    scaled = hybrid_loss(short, out.detach(), x0, x_t, t % 100, noise)["vb"]
    torch.testing.assert_close(scaled, 0.1 * vlb_terms(short, out.detach(), x0, x_t, t % 100))


def test_hybrid_loss_refuses_a_fixed_variance_output():
    diffusion = make_diffusion()
    x0, noise, out, t = _case()
    with pytest.raises(ValueError, match="expected 6 channels"):
        hybrid_loss(diffusion, out[:, :3], x0, x0, t, noise)

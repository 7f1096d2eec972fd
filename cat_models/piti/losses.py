"""GLIDE's hybrid training loss for learned-variance diffusion models (paper §3.3).

PITI trains and finetunes with GLIDE's loss (improved DDPM's `L_hybrid`, Nichol & Dhariwal
2021, with `RESCALED_MSE`): for x_t = q_sample(x_0, t, ε) and the model output [ε̂, v],

    loss = mean‖ε − ε̂‖²  +  (T / 1000) · L_vb(t)

    L_vb(t) = KL(q(x_{t-1} | x_t, x_0) ‖ p(x_{t-1} | x_t)) / (D·ln 2)       t > 0
            = −log p(x_0 | x_1) discretised to 256 bins / (D·ln 2)          t = 0

in bits per dimension (D = C·H·W), where p has the posterior mean at the x_0 predicted from ε̂
*with ε̂ detached* (the VLB term trains only the variance; the mean learns from the MSE alone)
and the learned-range log variance from v (diffusion.py). x_0 is not clipped in the loss.

One deviation from GLIDE: the discretised likelihood uses the exact normal CDF (`log_ndtr`)
instead of GLIDE's tanh approximation, which is off by up to ~1e-4 in the CDF; the loss values
differ from GLIDE's by that much at t = 0 and not at all elsewhere.
"""

from __future__ import annotations

import math

import torch

from cat_models.piti.diffusion import GaussianDiffusion


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch: [B, ...] -> [B]."""
    return x.mean(dim=tuple(range(1, x.dim())))


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor,
              logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor,
                                        log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) elementwise for x in [-1, 1] quantised to 256 levels (bin width 2/255) under
    N(mean, e^{2·log_scale}); the outermost bins extend to ±∞ (Ho et al. 2020, eq. 13)."""
    inv_std = torch.exp(-log_scale)
    upper = inv_std * (x - mean + 1.0 / 255.0)
    lower = inv_std * (x - mean - 1.0 / 255.0)
    log_cdf_upper = torch.special.log_ndtr(upper)
    log_survival_lower = torch.special.log_ndtr(-lower)
    delta = torch.special.ndtr(upper) - torch.special.ndtr(lower)
    log_delta = torch.log(delta.clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_upper,
                       torch.where(x > 0.999, log_survival_lower, log_delta))


def vlb_terms(diffusion: GaussianDiffusion, model_output: torch.Tensor, x0: torch.Tensor,
              x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """L_vb(t) per sample [B] in bits/dim for a [B, 2C, ...] output (no gradient stopping)."""
    true_mean, true_log_var = diffusion.q_posterior(x0, x_t, t)
    mean, log_var, _ = diffusion.p_mean_log_variance(model_output, x_t, t, clip_x0=False)
    kl = mean_flat(normal_kl(true_mean, true_log_var, mean, log_var)) / math.log(2.0)
    nll = -mean_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var))
    return torch.where(t.to(kl.device) == 0, nll / math.log(2.0), kl)


def hybrid_loss(diffusion: GaussianDiffusion, model_output: torch.Tensor, x0: torch.Tensor,
                x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
                ) -> dict[str, torch.Tensor]:
    """{"loss", "mse", "vb"}, each [B]: ε-MSE + (T/1000)·L_vb with ε̂ detached in L_vb."""
    channels = x0.shape[1]
    if model_output.shape[1] != 2 * channels or model_output.shape[2:] != x0.shape[2:]:
        raise ValueError(f"hybrid_loss: model output {tuple(model_output.shape)} does not fit "
                         f"images {tuple(x0.shape)} (expected {2 * channels} channels: ε, v)")
    eps, v = model_output[:, :channels], model_output[:, channels:]
    mse = mean_flat((noise - eps) ** 2)
    frozen = torch.cat([eps.detach(), v], dim=1)
    # GLIDE's RESCALED_MSE: × T/1000, "for equivalence with the initial implementation".
    vb = vlb_terms(diffusion, frozen, x0, x_t, t) * (diffusion.num_timesteps / 1000.0)
    return {"loss": mse + vb, "mse": mse, "vb": vb}

"""SPADE (Park et al. 2019) as used by OASIS, and a batch norm that synchronises under DDP.

Key layout follows `boschresearch/OASIS` models/norms.py (commit aeb875f): `first_norm` (param-free
batch norm with running buffers), `mlp_shared.0` (the first conv on the label map — the layer
CAT adapts, paper §3.2), `mlp_gamma`, `mlp_beta`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm


def sn(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Old-style (hook) spectral norm: keys `weight_orig/weight_u/weight_v` as in the official
    checkpoints. Power-iteration vectors are buffers, which DDP broadcasts from rank 0."""
    return spectral_norm(module) if enabled else module


class DistributedBatchNorm2d(nn.BatchNorm2d):
    """Param-free batch norm whose batch statistics span all DDP ranks in training.

    torch's SyncBatchNorm runs on GPUs only; this one all-reduces (with autograd) the per-channel
    sums, so gloo (CPU) and nccl (GPU) runs normalise exactly as one process on the global batch
    would. Outside `torch.distributed` it is plain `nn.BatchNorm2d(affine=False)`; the state dict
    keys (`running_mean/var`, `num_batches_tracked`) match the official checkpoints.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        count = torch.tensor([x.numel() / x.shape[1]], device=x.device, dtype=x.dtype)
        stats = torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count])
        stats = all_reduce(stats)
        n = stats[-1]
        c = x.shape[1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        return (x - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]


def param_free_norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return DistributedBatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    raise ValueError(f"param_free_norm: 'batch' or 'instance', got {kind!r}")


def resize_like(seg: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`seg` resized (nearest) to x's height and width; `seg` itself when they match already
    (the same values without a copy: a block resizes once for its two or three SPADEs)."""
    if seg.shape[2:] == x.shape[2:]:
        return seg
    return F.interpolate(seg, size=x.shape[2:], mode="nearest")


class SPADE(nn.Module):
    """out = norm(x) * (1 + gamma(seg)) + beta(seg); seg = [z ; one-hot], resized to x."""

    def __init__(self, norm_nc: int, label_nc: int, hidden: int = 128, ks: int = 3,
                 norm: str = "batch") -> None:
        super().__init__()
        self.first_norm = param_free_norm(norm, norm_nc)
        pw = ks // 2
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, ks, padding=pw), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, ks, padding=pw)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, ks, padding=pw)

    def label_features(self, seg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden features feeding the scale and the shift path (shared in plain OASIS)."""
        actv = self.mlp_shared(seg)
        return actv, actv

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalized = self.first_norm(x)
        seg = resize_like(seg, x)
        a_gamma, a_beta = self.label_features(seg)
        return normalized * (1 + self.mlp_gamma(a_gamma)) + self.mlp_beta(a_beta)


def clone_module(module: nn.Module) -> nn.Module:
    """`copy.deepcopy` that works after a forward pass: the spectral-norm hook caches the
    normalised `weight` as a non-leaf tensor, which deepcopy rejects; it is recomputed from
    `weight_orig` at the next forward, so a detached copy is safe to keep."""
    import copy

    for m in module.modules():
        if hasattr(m, "weight_orig") and isinstance(getattr(m, "weight", None), torch.Tensor):
            m.weight = m.weight.detach()
    return copy.deepcopy(module)

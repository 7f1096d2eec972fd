"""Sampling and the training-free CAT model (paper §4.3, Table 3).

Training-free transfer: the source generator with the affinity layer prepended (and the
residual branches at their zero init, so they change nothing) generates target-domain images
from target label maps without a single gradient step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cat_models.oasis.generator import OasisGenerator
from cat_models.oasis.source import SourceModel
from cat_models.oasis.transfer import affinity_values, cat_generator


def training_free_generator(source: SourceModel | OasisGenerator, affinity: Any,
                            use_ema: bool = True) -> OasisGenerator:
    """CAT generator for C_T target classes from a source model + A (C_S×C_T), no finetuning.

    `affinity` is an `AffinityMatrix` or a numpy array; its columns should sum to 1.
    """
    if isinstance(source, SourceModel):
        g = source.ema if use_ema else source.generator
    else:
        g = source
    values = affinity_values(affinity)
    return cat_generator(g, values.shape[1], values, split=True, residual=True).eval()


@torch.no_grad()
def sample_images(generator: nn.Module, labels: torch.Tensor, seed: int = 0,
                  batch_size: int = 16) -> torch.Tensor:
    """Images [N,3,H,W] in [-1,1] for label maps [N,H,W] (long, 0 = unlabeled), eval mode.

    z comes from a generator seeded by `seed`, so the same call gives the same images.
    """
    was_training = generator.training
    generator.eval()
    device = next(generator.parameters()).device
    num_classes = generator.semantic_nc - 1
    if int(labels.max()) > num_classes:
        raise ValueError(f"sample_images: label {int(labels.max())} exceeds the generator's "
                         f"{num_classes} classes")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, labels.shape[0], batch_size):
        lab = labels[i:i + batch_size].long().to(device)
        one_hot = torch.zeros(lab.shape[0], num_classes + 1, *lab.shape[1:], device=device)
        one_hot.scatter_(1, lab.unsqueeze(1), 1.0)
        z = torch.randn(lab.shape[0], generator.cfg.z_dim, generator=gen).to(device)
        out.append(generator(one_hot, z).float().cpu())
    generator.train(was_training)
    return torch.cat(out)

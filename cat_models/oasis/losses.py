"""OASIS losses (Schönfeld et al. 2021 §3; `boschresearch/OASIS` models/losses.py, models.py).

- (N+1)-class adversarial loss: D labels real pixels with their class (index k+1 for one-hot
  channel k) and generated pixels as "fake" (index 0); the real-side term is class-balanced by
  inverse pixel frequency over the batch.
- LabelMix: D must be consistent on a real/fake mix cut along class regions.
- EMA of the generator weights.
All class counts can be summed over DDP ranks (`reduce`), so the balancing weights equal those
a single process would compute on the global batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Reduce = Callable[[torch.Tensor], torch.Tensor]


def class_balance_weights(label: torch.Tensor, ignore_unlabeled: bool = True,
                          reduce: Reduce | None = None) -> torch.Tensor:
    """Per-pixel weights [B, H, W] = pixels / (classes present * pixels of the class).

    (OASIS: numel(label) / (present * C) / occurrence, numel counting all C channels.)

    `label` is one-hot [B, C, H, W]; channel 0 (unlabeled) gets weight 0 when
    `ignore_unlabeled` (OASIS `contain_dontcare_label`).
    """
    occurrence = label.sum(dim=(0, 2, 3)).float()
    pixels = torch.tensor([label.shape[0] * label.shape[2] * label.shape[3]],
                          dtype=occurrence.dtype, device=occurrence.device)
    if reduce is not None:
        both = reduce(torch.cat([occurrence, pixels]))
        occurrence, pixels = both[:-1], both[-1:]
    if ignore_unlabeled:
        occurrence[0] = 0
    present = (occurrence > 0).sum().clamp_min(1)
    coefficients = pixels / present / occurrence.clamp_min(1e-12)
    coefficients = torch.where(occurrence > 0, coefficients, torch.zeros_like(coefficients))
    return coefficients[label.argmax(dim=1)]


def n_plus_one_loss(logits: torch.Tensor, label: torch.Tensor, for_real: bool,
                    balance: bool = True, ignore_unlabeled: bool = True,
                    reduce: Reduce | None = None) -> torch.Tensor:
    """Cross-entropy against class k+1 (real) or 0 (fake); class-balanced when real."""
    if for_real:
        target = label.argmax(dim=1) + 1
        loss = F.cross_entropy(logits.float(), target, reduction="none")
        if balance:
            loss = loss * class_balance_weights(label, ignore_unlabeled, reduce)
        return loss.mean()
    target = torch.zeros(logits.shape[0], *logits.shape[2:], dtype=torch.long,
                         device=logits.device)
    return F.cross_entropy(logits.float(), target)


def labelmix_mask(label: torch.Tensor, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """[B, 1, H, W] binary mask: each class present in the batch is real (1) or fake (0)."""
    classes = label.argmax(dim=1, keepdim=True)
    bits = torch.randint(0, 2, (label.shape[1],), generator=generator).to(label.device)
    return bits[classes].float()


def labelmix_loss(mask: torch.Tensor, d_mixed: torch.Tensor, d_fake: torch.Tensor,
                  d_real: torch.Tensor) -> torch.Tensor:
    """MSE between D(mix of images) and the same mix of D's outputs (OASIS LabelMix)."""
    return F.mse_loss(d_mixed.float(), (mask * d_real + (1 - mask) * d_fake).float())


def generator_loss(d_fake: torch.Tensor, label: torch.Tensor, balance: bool = True,
                   ignore_unlabeled: bool = True, reduce: Reduce | None = None) -> torch.Tensor:
    """G wants D to classify generated pixels as their semantic class (OASIS)."""
    return n_plus_one_loss(d_fake, label, True, balance, ignore_unlabeled, reduce)


Augment = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"],
                   tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]]


def discriminator_loss(d: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                       label: torch.Tensor, mask: torch.Tensor | None, lambda_labelmix: float,
                       balance: bool = True, ignore_unlabeled: bool = True,
                       reduce: Reduce | None = None, augment: Augment | None = None
                       ) -> dict[str, torch.Tensor]:
    """D loss terms. fake/real/mixed go through D in one batched call (D has no batch norm,
    so this equals three calls, and DDP sees one forward per backward).

    `augment(images, label, mask)` (e.g. `cat_models.oasis.augment.apply` with the step's
    draws) transforms the stacked fake/real/mixed images, the label map and the LabelMix mask
    alike before D sees them; the mix itself is cut on the untransformed images."""
    fake = fake.detach()
    inputs = [fake, real]
    if mask is not None:
        inputs.append(mask * real + (1 - mask) * fake)
    stacked = torch.cat(inputs)
    if augment is not None:
        stacked, label, mask = augment(stacked, label, mask)
    outputs = d(stacked).chunk(len(inputs))
    terms = {
        "d_fake": n_plus_one_loss(outputs[0], label, False),
        "d_real": n_plus_one_loss(outputs[1], label, True, balance, ignore_unlabeled, reduce),
    }
    if mask is not None:
        terms["d_labelmix"] = lambda_labelmix * labelmix_loss(mask, outputs[2], outputs[0],
                                                              outputs[1])
    terms["d_total"] = sum(terms.values())
    return terms


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1−decay)·model for float tensors; other buffers are copied.

    Buffers (batch-norm running stats, spectral-norm u/v) follow the live model (OASIS
    `update_EMA` averages them too; copying keeps u/v valid for the averaged weights' scale).
    The batch-norm statistics are then those of the live weights, not the averaged ones:
    official OASIS re-estimates them through the EMA before it is evaluated, which
    `train_oasis(..., bn_refresh_batches=50)` does (`refresh_batch_norm`).
    """
    src = dict(model.named_parameters())
    for name, p in ema.named_parameters():
        p.lerp_(src[name].detach(), 1.0 - decay)
    src_b = dict(model.named_buffers())
    for name, b in ema.named_buffers():
        b.copy_(src_b[name])

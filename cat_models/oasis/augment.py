"""Differentiable augmentation of the discriminator's inputs, label maps included.

Few-shot GANs overfit their discriminator to the handful of real images; DiffAugment (Zhao et
al. 2020) applies the same random, differentiable transforms to every image D sees (real and
generated, in the D step and in the G step), so D cannot memorise the real set and G gets
gradients through the transform. OASIS's D is a per-pixel segmenter, so a geometric transform
must move the label map with the image: here every transform is applied to the images and to
their one-hot label map (and to LabelMix's mask) alike.

Policies (`OasisConfig.d_augment`, comma-separated, applied in `D_AUGMENT_POLICIES` order; "" = none, the paper's setting):

- `color`: brightness + U(-0.5, 0.5), saturation × U(0, 2), contrast × U(0.5, 1.5) per image
  (DiffAugment's ranges, on images in [-1, 1]); label maps untouched.
- `translation`: an integer shift of up to 1/8 of each side per image; uncovered pixels are
  zero in the image and *unlabeled* (channel 0) in the label map, so the class-balanced real
  and G losses ignore them (`OasisConfig.ignore_unlabeled`).
- `cutout`: a square of half the side per image set to zero, unlabeled in the label map.

The random draws come from a `torch.Generator` the caller seeds per step for the global batch
(`draw`), so a resumed run and every DDP rank (each applying its slice) see the same
transforms, and runs without augmentation draw nothing (their random streams are unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cat_models.oasis.config import D_AUGMENT_POLICIES, parse_augment_policy

__all__ = ["D_AUGMENT_POLICIES", "AugmentParams", "apply", "draw", "parse_augment_policy"]


@dataclass(frozen=True)
class AugmentParams:
    """Per-image random draws of one step, for the global batch ([B] or [B, k] tensors)."""

    policy: tuple[str, ...]
    brightness: torch.Tensor
    saturation: torch.Tensor
    contrast: torch.Tensor
    shift: torch.Tensor       # [B, 2] integer (dy, dx)
    cutout: torch.Tensor      # [B, 2] integer top-left corner (y, x)

    def part(self, index: slice) -> AugmentParams:
        """The draws of the rank's slice of the global batch."""
        return AugmentParams(self.policy, self.brightness[index], self.saturation[index],
                             self.contrast[index], self.shift[index], self.cutout[index])


def draw(policy: tuple[str, ...], batch: int, size: tuple[int, int],
         generator: torch.Generator) -> AugmentParams | None:
    """The step's draws (None without a policy: then nothing is drawn from `generator`)."""
    if not policy:
        return None
    h, w = size
    u = torch.rand(batch, 3, generator=generator)
    ry, rx = max(1, h // 8), max(1, w // 8)
    shift = torch.stack([torch.randint(-ry, ry + 1, (batch,), generator=generator),
                         torch.randint(-rx, rx + 1, (batch,), generator=generator)], dim=1)
    corner = torch.stack([torch.randint(0, h - h // 2 + 1, (batch,), generator=generator),
                          torch.randint(0, w - w // 2 + 1, (batch,), generator=generator)],
                         dim=1)
    return AugmentParams(policy, u[:, 0] - 0.5, u[:, 1] * 2.0, u[:, 2] + 0.5, shift, corner)


def _shift(x: torch.Tensor, dy: int, dx: int, fill: torch.Tensor | None) -> torch.Tensor:
    """x [C, H, W] moved by (dy, dx); uncovered pixels take `fill` [C] (zeros if None)."""
    _, h, w = x.shape
    pad = (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0))
    moved = F.pad(x, pad)[:, max(-dy, 0):max(-dy, 0) + h, max(-dx, 0):max(-dx, 0) + w]
    if fill is None or not (dy or dx):
        return moved
    covered = F.pad(torch.ones(1, h, w, dtype=x.dtype, device=x.device), pad)[
        :, max(-dy, 0):max(-dy, 0) + h, max(-dx, 0):max(-dx, 0) + w]
    return moved + (1 - covered) * fill.view(-1, 1, 1)


def apply(params: AugmentParams | None, images: torch.Tensor, labels: torch.Tensor,
          mask: torch.Tensor | None = None
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(images [B,3,H,W], one-hot labels [B,C+1,H,W], LabelMix mask [B,1,H,W] or None),
    all transformed alike; `images` may also be k·B images (e.g. fake, real, mixed stacked),
    image i taking the draws of label map i mod B. Differentiable in `images`."""
    if params is None:
        return images, labels, mask
    b = labels.shape[0]
    reps = images.shape[0] // b
    dev = images.device

    def per_image(t: torch.Tensor) -> torch.Tensor:
        return t.to(dev, images.dtype).repeat(reps).view(-1, 1, 1, 1)

    if "color" in params.policy:
        images = images + per_image(params.brightness)
        mean = images.mean(dim=1, keepdim=True)
        images = (images - mean) * per_image(params.saturation) + mean
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = (images - mean) * per_image(params.contrast) + mean
    unlabeled = torch.zeros(labels.shape[1], dtype=labels.dtype, device=labels.device)
    unlabeled[0] = 1
    if "translation" in params.policy:
        shifts = [(int(dy), int(dx)) for dy, dx in params.shift.tolist()]
        images = torch.stack([_shift(x, *shifts[i % b], None) for i, x in enumerate(images)])
        labels = torch.stack([_shift(x, *shifts[i], unlabeled) for i, x in enumerate(labels)])
        if mask is not None:
            mask = torch.stack([_shift(x, *shifts[i], None) for i, x in enumerate(mask)])
    if "cutout" in params.policy:
        h, w = labels.shape[2:]
        keep = torch.ones(b, 1, h, w, dtype=images.dtype, device=dev)
        for i, (y, x) in enumerate(params.cutout.tolist()):
            keep[i, :, y:y + h // 2, x:x + w // 2] = 0
        images = images * keep.repeat(reps, 1, 1, 1)
        keep_l = keep.to(labels.dtype)
        labels = labels * keep_l + (1 - keep_l) * unlabeled.view(1, -1, 1, 1)
    return images, labels, mask

"""PitiModel: mask encoder + U-Net behind one forward (the contract in `cat_models.piti`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cat_models.piti.config import PitiConfig, preset
from cat_models.piti.encoder import MaskEncoder
from cat_models.piti.unet import PitiUNet


def empty_mask(batch: int, num_classes: int, height: int, width: int,
               device: torch.device | str | None = None) -> torch.Tensor:
    """The unconditional mask of classifier-free guidance: [B, N + 1, H, W], all mass on the
    last ("empty") channel (the official all-white mask, see `palette`)."""
    mask = torch.zeros(batch, num_classes + 1, height, width, device=device)
    mask[:, num_classes] = 1.0
    return mask


def label_mask(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """`cat_models.data` labels [B, H, W] (0 = unlabeled, 1..N) -> the model's mask
    [B, N + 1, H, W]: class k on channel k - 1, unlabeled pixels all zero; the
    empty channel (index N) is 0 everywhere."""
    if labels.dim() == 2:
        labels = labels.unsqueeze(0)
    labels = labels.long()
    if labels.numel() and (labels.min() < 0 or labels.max() > num_classes):
        raise ValueError(f"label_mask: labels must be 0..{num_classes} (0 = unlabeled), got "
                         f"{int(labels.min())}..{int(labels.max())}")
    # Index N + 1 is a scratch channel for the unlabeled pixels, dropped below.
    index = torch.where(labels == 0, num_classes + 1, labels - 1)
    out = torch.zeros(labels.shape[0], num_classes + 2, *labels.shape[1:], device=labels.device)
    return out.scatter_(1, index.unsqueeze(1), 1.0)[:, :num_classes + 1]


class PitiModel(nn.Module):
    """model(x_t, t, mask, low_res=None) -> [B, 6, H, W] (ε; variance interpolation v)."""

    def __init__(self, config: PitiConfig, rgb_input: bool = False) -> None:
        super().__init__()
        if rgb_input and config.unet_mask_features:
            raise ValueError("PitiModel: unet_mask_features is an option of the one-hot "
                             "(embedded-scale) model, not of an RGB-input official one")
        self.config = config
        self.encoder = MaskEncoder(config, rgb_input=rgb_input)
        self.decoder = PitiUNet(config)

    def _check(self, x_t: torch.Tensor, mask: torch.Tensor,
               low_res: torch.Tensor | None) -> None:
        cfg = self.config
        want = 3 if self.encoder.rgb_input else cfg.mask_channels
        if mask.dim() != 4 or mask.shape[1] != want or mask.shape[0] != x_t.shape[0]:
            raise ValueError(f"PitiModel: mask must be [B={x_t.shape[0]}, {want}, H, W] "
                             f"(N = {cfg.num_classes} classes + the empty channel), got "
                             f"{tuple(mask.shape)}")
        if x_t.dim() != 4 or x_t.shape[-2:] != (cfg.resolution, cfg.resolution):
            raise ValueError(f"PitiModel: x_t must be [B, C, {cfg.resolution}, "
                             f"{cfg.resolution}], got {tuple(x_t.shape)}")
        if cfg.upsampler and low_res is None and x_t.shape[1] != cfg.in_channels:
            raise ValueError("PitiModel: an upsampler needs low_res (or x_t with the upsampled "
                             f"low-res image already concatenated: {cfg.in_channels} channels)")
        if not cfg.upsampler and low_res is not None:
            raise ValueError("PitiModel: low_res given to a base (non-upsampler) model")

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor,
                low_res: torch.Tensor | None = None) -> torch.Tensor:
        self._check(x_t, mask, low_res)
        if low_res is not None:
            up = F.interpolate(low_res.to(x_t.dtype), x_t.shape[-2:], mode="bilinear",
                               align_corners=False)
            x_t = torch.cat([x_t, up], dim=1)
        if x_t.shape[1] != self.config.in_channels:
            raise ValueError(f"PitiModel: expected {self.config.in_channels} image channels "
                             f"into the U-Net, got {x_t.shape[1]}")
        side = self.config.mask_resolution
        if mask.shape[-2:] != (side, side):
            # Nearest keeps a one-hot map one-hot (official: 256-px masks for the 64-px base).
            mask = F.interpolate(mask, (side, side), mode="nearest-exact")
        t = torch.as_tensor(t, device=x_t.device)
        if t.dim() == 0:
            t = t.expand(x_t.shape[0])
        spatial, xf_proj, xf_out = self.encoder.encode(mask.to(x_t.dtype))
        if not self.config.unet_mask_features:
            return self.decoder(x_t, t, xf_proj, xf_out)
        if spatial.shape[-2:] != x_t.shape[-2:]:
            # area-average: the fraction of each class under a U-Net pixel
            spatial = F.adaptive_avg_pool2d(spatial, x_t.shape[-2:])
        return self.decoder(x_t, t, xf_proj, xf_out, spatial)


def build_piti(config: PitiConfig | str = "embedded", seed: int | None = None,
               **overrides: object) -> PitiModel:
    """A freshly initialised model from a config or preset name (+ field overrides).

    `seed` draws the initial weights from a private RNG (same seed -> same weights) without
    touching the caller's global RNG.
    """
    cfg = preset(config, **overrides) if isinstance(config, str) else config.replace(**overrides)
    if seed is None:
        return PitiModel(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PitiModel(cfg)

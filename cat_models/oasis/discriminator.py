"""OASIS U-Net discriminator: per-pixel (N+1)-class output, channel 0 = "fake".

Names/shapes match `boschresearch/OASIS` models/discriminator.py (commit aeb875f; the
manifests in tests/fixtures/oasis_official/): `body_down.0-5` with widths
[3, 128, 128, 256, 256, 512, 512], `body_up.0-5` with skip concatenation. The last layer
`layer_up_last` is the head that CAT replaces (paper §3.2); `layer_names()` lists the blocks in
the order FreezeD counts them (body_down first).
"""

from __future__ import annotations

import torch
from torch import nn

from cat_models.oasis.config import OasisConfig
from cat_models.oasis.norms import sn


class ResBlockD(nn.Module):
    def __init__(self, fin: int, fout: int, up_or_down: int, first: bool, use_sn: bool) -> None:
        super().__init__()
        self.up_or_down = up_or_down
        self.first = first
        self.learned_shortcut = fin != fout
        conv1 = sn(nn.Conv2d(fin, fout, 3, 1, 1), use_sn)
        if first:
            self.conv1 = nn.Sequential(conv1)
        elif up_or_down > 0:
            self.conv1 = nn.Sequential(nn.LeakyReLU(0.2), nn.Upsample(scale_factor=2), conv1)
        else:
            self.conv1 = nn.Sequential(nn.LeakyReLU(0.2), conv1)
        self.conv2 = nn.Sequential(nn.LeakyReLU(0.2), sn(nn.Conv2d(fout, fout, 3, 1, 1), use_sn))
        if self.learned_shortcut:
            self.conv_s = sn(nn.Conv2d(fin, fout, 1, 1, 0), use_sn)
        if up_or_down > 0:
            self.sampling: nn.Module = nn.Upsample(scale_factor=2)
        elif up_or_down < 0:
            self.sampling = nn.AvgPool2d(2)
        else:
            self.sampling = nn.Identity()

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.first:
            if self.up_or_down < 0:
                x = self.sampling(x)
            return self.conv_s(x) if self.learned_shortcut else x
        if self.up_or_down > 0:
            x = self.sampling(x)
        if self.learned_shortcut:
            x = self.conv_s(x)
        if self.up_or_down < 0:
            x = self.sampling(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dx = self.conv2(self.conv1(x))
        if self.up_or_down < 0:
            dx = self.sampling(dx)
        return self.shortcut(x) + dx


class OasisDiscriminator(nn.Module):
    """image [B, 3, H, W] -> logits [B, semantic_nc + 1, H, W]."""

    def __init__(self, cfg: OasisConfig, semantic_nc: int) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.discriminator_widths()
        n = cfg.num_res_blocks
        use_sn = cfg.spectral_norm
        last = cfg.channels_d  # official: 64
        self.body_down = nn.ModuleList(
            ResBlockD(ch[i], ch[i + 1], -1, first=i == 0, use_sn=use_sn) for i in range(n))
        up = [ResBlockD(ch[-1], ch[-2], 1, False, use_sn)]
        up += [ResBlockD(2 * ch[-1 - i], ch[-2 - i], 1, False, use_sn) for i in range(1, n - 1)]
        up.append(ResBlockD(2 * ch[1], last, 1, False, use_sn))
        self.body_up = nn.ModuleList(up)
        self.layer_up_last = nn.Conv2d(last, semantic_nc + 1, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.body_down:
            x = block(x)
            skips.append(x)
        x = self.body_up[0](x)
        for i in range(1, len(self.body_down)):
            x = self.body_up[i](torch.cat([skips[-i - 1], x], dim=1))
        return self.layer_up_last(x)

    def layer_names(self) -> list[str]:
        """Module-name prefixes in FreezeD order: body_down.*, body_up.*, layer_up_last."""
        return self.cfg.discriminator_layer_names()


def build_discriminator(cfg: OasisConfig, num_classes: int, init: bool = True
                        ) -> OasisDiscriminator:
    from cat_models.oasis.generator import init_oasis_weights

    d = OasisDiscriminator(cfg, num_classes + 1)
    if init:
        init_oasis_weights(d)
    return d

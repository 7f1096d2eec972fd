"""PITI's class -> RGB palette and its fold into the encoder's first conv (paper §3.3).

The official mask-to-image model reads a colour-coded mask in [-1, 1]: class id i (COCO-Stuff
0..181) is drawn in pix2pixHD's `labelcolormap` colour i, unlabeled pixels (id 255) stay black,
and the "empty" mask of classifier-free guidance is all ones (white). Because conv1 is linear
and both encodings pad with zeros, conv1(colour(m)) = conv1'(m) exactly for the one-hot map m
with conv1'[:, c] = Σ_rgb conv1[:, rgb] · colour_c[rgb]; the unlabeled colour (black) gets its
own input, the unlabeled indicator. Channel c of our mask is class c + 1 of `cat_models.data`
(= official id c), channel N is the empty mask, channel N + 1 the unlabeled indicator.
No `labelcolormap` colour is white or black (7 bits per channel, never the lowest one, and
id + 1 ≥ 1), so the fold loses nothing.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

# pix2pixHD's special case: labelcolormap(35) is the Cityscapes palette, not the bit pattern.
CITYSCAPES_COLOURS = (
    (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0), (81, 0, 81),
    (128, 64, 128), (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70),
    (102, 102, 156), (190, 153, 153), (180, 165, 180), (150, 100, 100), (150, 120, 90),
    (153, 153, 153), (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35),
    (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100), (0, 0, 230), (119, 11, 32),
    (0, 0, 142),
)
UNLABELED_RGB = (-1.0, -1.0, -1.0)   # black: the official COCO maps leave id 255 uncoloured
EMPTY_RGB = (1.0, 1.0, 1.0)          # the official "uncond" mask: torch.ones_like(mask)


def labelcolormap(n: int) -> np.ndarray:
    """pix2pixHD's palette: uint8 [n, 3]. Colour i spreads the bits of i + 1 over the three
    channels, three bits per round, from the most significant bit down (7 rounds)."""
    if n == 35:
        return np.asarray(CITYSCAPES_COLOURS, dtype=np.uint8)
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        ident, rgb = i + 1, [0, 0, 0]
        for j in range(7):
            for c in range(3):
                rgb[c] |= ((ident >> c) & 1) << (7 - j)
            ident >>= 3
        cmap[i] = rgb
    return cmap


def palette(num_classes: int) -> torch.Tensor:
    """[N + 2, 3] in [-1, 1]: the colour of each encoder input channel (N classes, empty,
    unlabeled), normalised as the official loader does (x / 255 * 2 - 1)."""
    colours = torch.as_tensor(labelcolormap(num_classes), dtype=torch.float64) / 255 * 2 - 1
    return torch.cat([colours, torch.tensor([EMPTY_RGB, UNLABELED_RGB], dtype=torch.float64)])


def colorize(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The official encoder's input for `cat_models.data` labels [B, H, W] (0 = unlabeled,
    1..N): float [B, 3, H, W] in [-1, 1]."""
    pal = palette(num_classes).float().to(labels.device)
    table = torch.cat([pal[-1:], pal[:num_classes]])   # label 0 -> black, k -> colour k - 1
    return table[labels.long()].permute(0, 3, 1, 2).contiguous()


def fold_palette(conv_rgb: nn.Conv2d, num_classes: int) -> nn.Conv2d:
    """A conv reading [mask (N + 1 ch) ; unlabeled indicator] equal to `conv_rgb` on the
    coloured map: weight[:, c] = Σ_rgb conv_rgb.weight[:, rgb] · palette[c, rgb]."""
    if conv_rgb.in_channels != 3:
        raise ValueError(f"fold_palette: expected an RGB conv (3 input channels), got "
                         f"{conv_rgb.in_channels}")
    pal = palette(num_classes)
    new = nn.Conv2d(num_classes + 2, conv_rgb.out_channels, conv_rgb.kernel_size,
                    conv_rgb.stride, conv_rgb.padding, bias=conv_rgb.bias is not None,
                    device=conv_rgb.weight.device, dtype=conv_rgb.weight.dtype)
    with torch.no_grad():
        w = torch.einsum("orhw,cr->ochw", conv_rgb.weight.double(), pal.to(conv_rgb.weight.device))
        new.weight.copy_(w.to(new.weight.dtype))
        if conv_rgb.bias is not None:
            new.bias.copy_(conv_rgb.bias)
    return new

"""The palette fold (paper §3.3): the one-hot encoder on a one-hot map equals the official
RGB encoder on the colour-coded map."""

from __future__ import annotations

import numpy as np
import torch

from cat_models.piti import empty_mask, label_mask
from cat_models.piti.official import fold_into_onehot
from cat_models.piti.palette import colorize, fold_palette, labelcolormap, palette
from tests.piti.tiny_models import NUM_CLASSES, random_labels, randomise, tiny_model


def pix2pix_labelcolormap(n: int) -> np.ndarray:
    """pix2pixHD's `util.labelcolormap` as published (bit strings, XOR), for comparison."""
    def uint82bin(v: int, count: int = 8) -> str:
        return "".join(str((v >> y) & 1) for y in range(count - 1, -1, -1))

    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        ident = i + 1
        for j in range(7):
            s = uint82bin(ident)
            r ^= int(s[-1]) << (7 - j)
            g ^= int(s[-2]) << (7 - j)
            b ^= int(s[-3]) << (7 - j)
            ident >>= 3
        cmap[i] = (r, g, b)
    return cmap


def test_labelcolormap_is_pix2pixhd():
    for n in (5, 151, 182):
        np.testing.assert_array_equal(labelcolormap(n), pix2pix_labelcolormap(n))
    cmap = labelcolormap(182)
    assert cmap[:4].tolist() == [[128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    # All distinct and never white or black: the empty and unlabeled inputs stay apart.
    colours = {tuple(c) for c in cmap}
    assert len(colours) == 182 and (255, 255, 255) not in colours and (0, 0, 0) not in colours
    assert labelcolormap(35)[7].tolist() == [128, 64, 128]   # Cityscapes' "road"


def test_palette_rows_and_colorize():
    pal = palette(NUM_CLASSES)
    assert pal.shape == (NUM_CLASSES + 2, 3)
    assert pal[NUM_CLASSES].tolist() == [1, 1, 1] and pal[-1].tolist() == [-1, -1, -1]
    rgb = colorize(torch.tensor([[[0, 1, 3]]]), NUM_CLASSES)
    assert rgb.shape == (1, 3, 1, 3)
    assert rgb[0, :, 0, 0].tolist() == [-1, -1, -1]
    torch.testing.assert_close(rgb[0, :, 0, 1], torch.tensor([128 / 255 * 2 - 1, -1.0, -1.0]))
    torch.testing.assert_close(rgb[0, :, 0, 2], pal[2].float())


def test_conv_fold_is_exact_at_the_official_width():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 32, 7, padding=3)
    folded = fold_palette(conv, 182)
    assert folded.weight.shape == (32, 184, 7, 7)
    labels = random_labels(2, 32, num_classes=182, seed=1)
    mask = label_mask(labels, 182)
    onehot_in = torch.cat([mask, 1 - mask.sum(1, keepdim=True)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(folded(onehot_in), conv(colorize(labels, 182)), atol=1e-5,
                                   rtol=1e-5)


def test_onehot_encoder_equals_official_rgb_encoder():
    rgb_model = tiny_model(seed=2, rgb_input=True)
    labels = random_labels(3, 16, seed=4)            # includes unlabeled pixels
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([1, 50, 900])
    with torch.no_grad():
        want_enc = rgb_model.encoder(colorize(labels, NUM_CLASSES))
        want = rgb_model(x, t, colorize(labels, NUM_CLASSES))
        want_empty = rgb_model(x, t, torch.ones(3, 3, 16, 16))   # official "uncond" mask
        fold_into_onehot(rgb_model)
        got_enc = rgb_model.encoder(label_mask(labels, NUM_CLASSES))
        got = rgb_model(x, t, label_mask(labels, NUM_CLASSES))
        got_empty = rgb_model(x, t, empty_mask(3, NUM_CLASSES, 16, 16))
    for a, b in zip(got_enc, want_enc):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_empty, want_empty, atol=1e-5, rtol=1e-5)
    # The fold must not be trivially true: other labels give another encoding.
    other = label_mask(random_labels(3, 16, seed=5), NUM_CLASSES)
    with torch.no_grad():
        assert (rgb_model.encoder(other)[0] - got_enc[0]).abs().max() > 1e-3


def test_fold_refuses_a_non_rgb_conv():
    conv = randomise(torch.nn.Conv2d(4, 8, 3), seed=0)
    try:
        fold_palette(conv, NUM_CLASSES)
    except ValueError as err:
        assert "3 input channels" in str(err)
    else:
        raise AssertionError("fold_palette accepted a 4-channel conv")

"""`unet_mask_features` (an embedded-scale deviation from PITI): the encoder's conv1 features
also enter the U-Net through `decoder.mask_in`; A, the prompts and the recipes still work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cat_models.piti import PRESETS, PitiModel, build_plan, cat_model, label_mask
from cat_models.piti.transfer import reinit_mask_input
from cat_models.recipes import trainable_names
from tests.piti.tiny_models import NUM_CLASSES, random_labels, randomise, tiny_cfg


def flagged(seed: int = 0) -> PitiModel:
    torch.manual_seed(seed)
    return randomise(PitiModel(tiny_cfg(unet_mask_features=True)), seed).eval()


def inputs(batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 16, 16, generator=gen)
    return x, torch.tensor([10, 700][:batch]), label_mask(random_labels(batch, 16, seed=seed),
                                                          NUM_CLASSES)


def test_official_presets_keep_piti_layout_and_bad_uses_are_errors():
    assert not PRESETS["official_base"].unet_mask_features
    assert not PRESETS["official_upsampler"].unet_mask_features
    assert PitiModel(tiny_cfg(unet_mask_features=False)).decoder.mask_in is None
    with pytest.raises(ValueError, match="PitiConfig.unet_mask_features: only for a base"):
        PRESETS["embedded_upsampler"].replace(unet_mask_features=True)
    with pytest.raises(ValueError, match="unet_mask_features is an option of the one-hot"):
        PitiModel(tiny_cfg(unet_mask_features=True), rgb_input=True)


def test_encode_returns_conv1_features_and_the_tokens_unchanged():
    model = flagged()
    _, _, mask = inputs()
    enc = model.encoder
    with torch.no_grad():
        spatial, xf_proj, xf_out = enc.encode(mask)
        cnn = enc.cnn
        want = F.leaky_relu(cnn.norm1(cnn.conv1(enc.cnn_input(mask))), 0.2)
        torch.testing.assert_close(spatial, want)
        proj, out = enc(mask)
    assert torch.equal(proj, xf_proj) and torch.equal(out, xf_out)


def test_mask_in_adds_the_features_to_the_input_conv_and_nothing_else():
    model = flagged()
    plain = PitiModel(tiny_cfg()).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("decoder.mask_in")}
    plain.load_state_dict(state, strict=True)
    x, t, mask = inputs()
    with torch.no_grad():
        with_features = model(x, t, mask)
        torch.nn.init.zeros_(model.decoder.mask_in.weight)
        torch.nn.init.zeros_(model.decoder.mask_in.bias)
        torch.testing.assert_close(model(x, t, mask), plain(x, t, mask))
    assert not torch.allclose(with_features, plain(x, t, mask))
    with pytest.raises(ValueError, match="mask_features must be given exactly"):
        plain.decoder(x, t, torch.zeros(2, 16), torch.zeros(2, 16, 64), torch.zeros(2, 8, 16, 16))


def test_the_layout_reaches_the_pixels_it_describes():
    """Through mask_in alone (cross-attention and cls path cut), a change of the mask in one
    corner changes the output near it more than far from it."""
    model = flagged()
    with torch.no_grad():
        for block in [*model.decoder.input_blocks, model.decoder.middle_block,
                      *model.decoder.output_blocks]:
            for layer in block:
                if hasattr(layer, "encoder_kv"):
                    layer.encoder_kv.weight.zero_()
                    layer.encoder_kv.bias.zero_()
        model.decoder.transformer_proj.weight.zero_()
        x, t, _ = inputs(1)
        labels = torch.ones(1, 16, 16, dtype=torch.long)
        changed = labels.clone()
        changed[:, :4, :4] = 3
        diff = (model(x, t, label_mask(changed, NUM_CLASSES))
                - model(x, t, label_mask(labels, NUM_CLASSES))).abs().sum(1)[0]
    assert diff[:4, :4].mean() > 5 * diff[12:, 12:].mean()


def test_cat_a_acts_through_the_mask_and_fixdec_freezes_mask_in():
    source = flagged()
    x, t, mask = inputs()
    identity = cat_model(source, NUM_CLASSES, np.eye(NUM_CLASSES))
    swapped = cat_model(source, NUM_CLASSES, np.eye(NUM_CLASSES)[[1, 0, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(identity(x, t, mask), source(x, t, mask))
        assert not torch.allclose(swapped(x, t, mask), source(x, t, mask))
    plan = build_plan("cat", source, 3, prompt_count=2)
    names = trainable_names(plan.model)
    assert not any(n.startswith("decoder.") for n in names)
    assert "encoder.affinity.weight" in names and "encoder.cnn.conv1.weight" not in names
    target = reinit_mask_input(source, 3)
    with torch.no_grad():
        out = target(x, t, label_mask(random_labels(2, 16, 3), 3))
    assert out.shape == (2, 6, 16, 16) and target.decoder.mask_in is not None


def test_a_mask_at_another_resolution_is_area_pooled_to_the_unet():
    torch.manual_seed(0)
    model = randomise(PitiModel(tiny_cfg(unet_mask_features=True, mask_resolution=32,
                                         cnn_channels=(8, 16, 16))), 0).eval()
    x, t, _ = inputs()
    mask = label_mask(random_labels(2, 32), NUM_CLASSES)
    with torch.no_grad():
        spatial, proj, out = model.encoder.encode(mask)
        h = model.decoder.input_blocks[0](x, None)
        got = model(x, t, mask)
        pooled = F.avg_pool2d(spatial, 2)
        want = model.decoder(x, t, proj, out, pooled)
    assert h.shape[-1] == 16
    torch.testing.assert_close(got, want)

"""The model contract the diffusion code relies on (cat_models.piti docstring)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cat_models.piti import PitiModel, build_piti, empty_mask, label_mask
from tests.piti.tiny_models import NUM_CLASSES, random_labels, tiny_cfg, tiny_model


def test_label_mask_layout():
    labels = torch.tensor([[[0, 1], [5, 3]]])
    mask = label_mask(labels, NUM_CLASSES)
    assert mask.shape == (1, NUM_CLASSES + 1, 2, 2)
    assert mask[0, :, 0, 0].sum() == 0                 # unlabeled: all zero
    assert mask[0, 0, 0, 1] == 1 and mask[0, 4, 1, 0] == 1 and mask[0, 2, 1, 1] == 1
    assert mask.sum(dim=1).tolist() == [[[0, 1], [1, 1]]]
    assert mask[:, NUM_CLASSES].sum() == 0             # the empty channel is never a class
    with pytest.raises(ValueError, match=r"labels must be 0\.\.5"):
        label_mask(torch.tensor([[6]]), NUM_CLASSES)


def test_empty_mask_puts_all_mass_on_the_last_channel():
    mask = empty_mask(2, NUM_CLASSES, 3, 4)
    assert mask.shape == (2, NUM_CLASSES + 1, 3, 4)
    assert mask[:, -1].eq(1).all() and mask[:, :-1].eq(0).all()


def test_forward_contract_and_errors():
    model = tiny_model()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0, 999])
    mask = label_mask(random_labels(2, 16), NUM_CLASSES)
    with torch.no_grad():
        out = model(x, t, mask)
        assert out.shape == (2, 6, 16, 16)
        # A scalar t is broadcast over the batch.
        torch.testing.assert_close(model(x, torch.tensor(5), mask),
                                   model(x, torch.tensor([5, 5]), mask))
    with pytest.raises(ValueError, match=r"mask must be \[B=2, 6, H, W\]"):
        model(x, t, label_mask(random_labels(2, 16), NUM_CLASSES + 1))
    with pytest.raises(ValueError, match="x_t must be"):
        model(torch.randn(2, 3, 8, 8), t, mask)
    with pytest.raises(ValueError, match="low_res given to a base"):
        model(x, t, mask, low_res=torch.randn(2, 3, 8, 8))
    assert model.config.learn_sigma and not model.config.upsampler


def test_masks_of_another_size_are_resized_nearest():
    model = tiny_model()
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([7])
    small = label_mask(random_labels(1, 8, seed=3), NUM_CLASSES)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, small),
                                   model(x, t, F.interpolate(small, (16, 16), mode="nearest")))


def test_upsampler_concatenates_the_bilinear_low_res_image():
    model = tiny_model(upsampler=True, low_resolution=8)
    assert model.config.in_channels == 6
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 4])
    low = torch.randn(2, 3, 8, 8)
    mask = empty_mask(2, NUM_CLASSES, 16, 16)
    up = F.interpolate(low, (16, 16), mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, mask, low_res=low),
                                   model(torch.cat([x, up], 1), t, mask))
        assert (model(x, t, mask, low_res=low) - model(x, t, mask, low_res=low * 0)).abs().max() > 0
    with pytest.raises(ValueError, match="needs low_res"):
        model(x, t, mask)


def test_build_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_piti(tiny_cfg(), seed=4)
    after = torch.rand(1)
    b = build_piti(tiny_cfg(), seed=4)
    c = build_piti(tiny_cfg(), seed=5)
    assert torch.equal(before, after)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["encoder.positional_embedding"], sc["encoder.positional_embedding"])


def test_embedded_preset_forward_and_size():
    model = build_piti("embedded", seed=0)
    cfg = model.config
    assert (cfg.resolution, cfg.mask_resolution, cfg.token_grid, cfg.xf_width) == (32, 32, 8, 128)
    assert not cfg.upsampler and cfg.num_tokens == 65
    params = sum(p.numel() for p in model.parameters())
    assert 2e6 < params < 4e6
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32), torch.tensor([500]),
                    label_mask(random_labels(1, 32, cfg.num_classes), cfg.num_classes))
    assert out.shape == (1, 6, 32, 32)
    rebuilt = PitiModel(cfg)
    rebuilt.load_state_dict(model.state_dict(), strict=True)

"""Shapes, widths and config validation of the OASIS generator and discriminator."""

from __future__ import annotations

import pytest
import torch

from cat_models.oasis import OasisConfig, build_discriminator, build_generator, preset
from tests.oasis.conftest import one_hot, tiny_cfg


@pytest.mark.parametrize("resolution,blocks,channels", [
    ((32, 32), 4, 4), ((64, 64), 5, 4), ((32, 64), 4, 2), ((64, 128), 6, 2), ((64, 64), 4, 2)])
def test_generator_and_discriminator_shapes(resolution, blocks, channels):
    torch.manual_seed(0)
    cfg = tiny_cfg(resolution=resolution, num_res_blocks=blocks, channels_g=channels,
                   channels_d=channels)
    g, d = build_generator(cfg, 7), build_discriminator(cfg, 7)
    labels = one_hot(torch.randint(0, 8, (2, *resolution)), 7)
    image = g(labels, torch.randn(2, cfg.z_dim))
    assert image.shape == (2, 3, *resolution)
    assert image.abs().max() <= 1.0
    assert d(image).shape == (2, 9, *resolution)      # semantic_nc + 1 ("fake" at 0)
    assert g.fc.in_channels == cfg.z_dim + 8            # noise before the one-hot map


def test_widths_follow_official_layout():
    cfg = preset("official_ade20k")
    assert cfg.generator_widths() == [1024, 1024, 1024, 512, 256, 128, 64]
    assert cfg.discriminator_widths() == [3, 128, 128, 256, 256, 512, 512]
    assert preset("official_cityscapes").latent_size == (8, 16)
    assert preset("official_cityscapes").lambda_labelmix == 5.0


@pytest.mark.parametrize("name", ["bench32", "bench64", "official_ade20k"])
def test_freezed_layer_order_names_the_discriminators_blocks(name):
    """The config's FreezeD list (what studies are validated against) is the D's own blocks."""
    d = build_discriminator(preset(name), 5)
    blocks = [f"{n}.{i}" for n in ("body_down", "body_up") for i in range(len(getattr(d, n)))]
    assert d.layer_names() == [*blocks, "layer_up_last"]


def test_bench64_size_matches_design_budget():
    cfg = preset("bench64")
    g, d = build_generator(cfg, 12, init=False), build_discriminator(cfg, 12, init=False)
    n_g = sum(p.numel() for p in g.parameters()) / 1e6
    n_d = sum(p.numel() for p in d.parameters()) / 1e6
    assert 1.5 < n_g < 2.5 and 0.6 < n_d < 1.3, (n_g, n_d)


def test_z_changes_output_and_is_reproducible():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    g = build_generator(cfg, 3).eval()
    labels = one_hot(torch.randint(0, 4, (1, 32, 32)), 3)
    z = torch.randn(1, cfg.z_dim)
    assert torch.equal(g(labels, z), g(labels, z))
    assert not torch.allclose(g(labels, z), g(labels, z + 1.0))


@pytest.mark.parametrize("bad", [{"resolution": (32, 32), "num_res_blocks": 6},
                                 {"resolution": (16, 16)}, {"param_free_norm": "group"}])
def test_config_errors_name_the_field(bad):
    with pytest.raises(ValueError, match="OasisConfig"):
        OasisConfig(**bad)


def test_config_round_trip_and_unknown_field():
    cfg = preset("bench64")
    assert OasisConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown fields"):
        OasisConfig.from_dict({**cfg.to_dict(), "lr": 1.0})
    with pytest.raises(KeyError, match="bench64"):
        preset("nope")

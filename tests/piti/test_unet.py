"""The U-Net decoder: official attention with encoder keys/values, timestep embedding,
zero-initialised outputs, scale-shift norm, up/down-sampling res blocks, dropout."""

from __future__ import annotations

import math

import pytest
import torch

from cat_models.piti import PitiConfig, PitiModel, preset
from cat_models.piti.unet import AttentionBlock, PitiUNet, ResBlock
from tests.piti.tiny_models import randomise, tiny_cfg


def legacy_attention(block: AttentionBlock, x: torch.Tensor, enc: torch.Tensor) -> torch.Tensor:
    """guided-diffusion's `QKVAttention` written out: per-head [q k v] rows of `qkv`, the
    encoder's keys/values first in the sequence, q and k scaled by ch^-1/4."""
    b, c, h, w = x.shape
    heads, ch = block.heads, c // block.heads
    qkv = block.qkv(block.norm(x).reshape(b, c, -1)).reshape(b * heads, 3 * ch, -1)
    q, k, v = qkv[:, :ch], qkv[:, ch:2 * ch], qkv[:, 2 * ch:]
    ekv = block.encoder_kv(enc).reshape(b * heads, 2 * ch, -1)
    k = torch.cat([ekv[:, :ch], k], dim=-1)
    v = torch.cat([ekv[:, ch:], v], dim=-1)
    s = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q * s, k * s), dim=-1)
    a = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, -1)
    return x + block.proj_out(a).reshape(b, c, h, w)


def test_attention_block_matches_the_official_formula():
    cfg = tiny_cfg(num_head_channels=4)
    torch.manual_seed(0)
    block = randomise(AttentionBlock(16, cfg, encoder_channels=12), seed=2)
    assert block.heads == 4
    x, enc = torch.randn(2, 16, 4, 4), torch.randn(2, 12, 9)
    torch.testing.assert_close(block(x, enc), legacy_attention(block, x, enc), atol=1e-5,
                               rtol=1e-5)


def test_timestep_embedding_is_cos_then_sin():
    unet = PitiUNet(tiny_cfg())
    t = torch.tensor([0, 7, 999])
    half = 4
    freqs = torch.exp(-math.log(10000) * torch.arange(half) / half)
    want = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    with torch.no_grad():
        got = unet.time_embedding(t)
        torch.testing.assert_close(got, unet.time_embed(want))


def test_fresh_unet_outputs_zero_and_residual_branches_start_as_identity():
    torch.manual_seed(0)
    model = PitiModel(tiny_cfg())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        out = model(x, torch.tensor([3, 400]), torch.zeros(2, 6, 16, 16))
        assert out.shape == (2, 6, 16, 16) and out.abs().max() == 0
        block = model.decoder.input_blocks[1][0]
        assert isinstance(block, ResBlock)
        h = torch.randn(2, 8, 16, 16)
        torch.testing.assert_close(block(h, torch.randn(2, 32)), h)


def test_every_input_reaches_the_output():
    model = randomise(PitiModel(tiny_cfg()), seed=1).eval()
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([10])
    mask = torch.zeros(1, 6, 16, 16)
    mask[:, 0] = 1.0
    with torch.no_grad():
        base = model(x, t, mask)
        other_mask = torch.zeros_like(mask)
        other_mask[:, 3] = 1.0
        for changed in (model(x + 0.1, t, mask), model(x, t + 100, mask),
                        model(x, t, other_mask)):
            assert (changed - base).abs().max() > 1e-4


def test_scale_shift_and_dropout():
    cfg = tiny_cfg(dropout=0.5)
    model = randomise(PitiModel(cfg), seed=1)
    block = model.decoder.input_blocks[1][0]
    assert block.emb_layers[1].out_features == 2 * 8        # scale and shift
    assert not tiny_cfg(use_scale_shift_norm=False).use_scale_shift_norm
    plain = PitiModel(tiny_cfg(use_scale_shift_norm=False)).decoder.input_blocks[1][0]
    assert plain.emb_layers[1].out_features == 8
    x, t, mask = torch.randn(1, 3, 16, 16), torch.tensor([5]), torch.zeros(1, 6, 16, 16)
    with torch.no_grad():
        model.train()
        a, b = model(x, t, mask), model(x, t, mask)
        assert (a - b).abs().max() > 1e-4
        model.eval()
        torch.testing.assert_close(model(x, t, mask), model(x, t, mask))


def test_resblock_updown_and_conv_resampling_layouts():
    unet = PitiUNet(tiny_cfg())
    down = unet.input_blocks[2][0]
    up = unet.output_blocks[1][-1]
    assert isinstance(down, ResBlock) and down.updown and isinstance(up, ResBlock) and up.updown
    conv = PitiUNet(tiny_cfg(resblock_updown=False))
    assert conv.input_blocks[2][0].op.stride == (2, 2)
    assert conv.output_blocks[1][-1].conv.kernel_size == (3, 3)
    with torch.no_grad():
        out = PitiModel(tiny_cfg(resblock_updown=False))(
            torch.randn(1, 3, 16, 16), torch.tensor([1]), torch.zeros(1, 6, 16, 16))
    assert out.shape == (1, 6, 16, 16)


def test_official_attention_levels_and_widths():
    cfg, up = preset("official_base"), preset("official_upsampler")
    assert cfg.channel_mult == (1, 2, 3, 4) and cfg.attention_downsample == (2, 4, 8)
    assert up.channel_mult == (1, 1, 2, 2, 4, 4) and up.attention_downsample == (8, 16, 32)
    assert up.in_channels == 6 and cfg.in_channels == 3 and cfg.out_channels == 6
    with torch.device("meta"):
        unet = PitiUNet(cfg)
    blocks = [m for m in unet.modules() if isinstance(m, AttentionBlock)]
    # 3 levels x 3 input blocks + the middle block + 3 levels x 4 output blocks, 64-ch heads.
    assert len(blocks) == 22 and all(hasattr(b, "encoder_kv") for b in blocks)
    assert sorted({b.heads for b in blocks}) == [6, 9, 12]


@pytest.mark.parametrize("field,value,match", [
    ("attention_resolutions", (12,), "attention_resolutions"),
    ("norm_groups", 5, "norm_groups"),
    ("num_head_channels", 5, "num_head_channels"),
    ("mask_resolution", 15, "mask_resolution"),
    ("xf_heads", 3, "xf_heads"),
])
def test_config_errors_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=f"PitiConfig.{match}"):
        tiny_cfg(**{field: value})


def test_config_round_trip_and_unknown_fields():
    cfg = tiny_cfg(prompt_count=3)
    assert PitiConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown fields"):
        PitiConfig.from_dict({**cfg.to_dict(), "widht": 3})
    with pytest.raises(ValueError, match="low_resolution"):
        PitiConfig(upsampler=True)

"""The mask encoder: official layout, GLIDE attention packing, deep prompts (paper §3.3)."""

from __future__ import annotations

import math

import pytest
import torch

from cat_models.piti import label_mask, preset
from cat_models.piti.encoder import MaskCNN, MaskEncoder, XfAttention
from tests.piti.tiny_models import NUM_CLASSES, random_labels, randomise, tiny_cfg


def glide_attention(attn: XfAttention, x: torch.Tensor) -> torch.Tensor:
    """GLIDE's `QKVMultiheadAttention` written out: per-head [q k v] slices, both q and k
    scaled by ch^-1/4 before the product."""
    b, n, width = x.shape
    ch = width // attn.heads
    qkv = attn.c_qkv(x).view(b, n, attn.heads, 3 * ch)
    q, k, v = qkv[..., :ch], qkv[..., ch:2 * ch], qkv[..., 2 * ch:]
    scale = 1 / math.sqrt(math.sqrt(ch))
    w = torch.softmax(torch.einsum("bthc,bshc->bhts", q * scale, k * scale), dim=-1)
    out = torch.einsum("bhts,bshc->bthc", w, v).reshape(b, n, width)
    return attn.c_proj(out)


def encoder(prompts: int = 0, seed: int = 0) -> MaskEncoder:
    torch.manual_seed(0)
    enc = randomise(MaskEncoder(tiny_cfg()), seed=1)
    if prompts:
        enc.add_prompts(prompts, seed)
    return enc.eval()


def test_attention_matches_glide_per_head_packing():
    torch.manual_seed(0)
    attn = randomise(XfAttention(16, 2), seed=3)
    x = torch.randn(2, 7, 16)
    torch.testing.assert_close(attn(x), glide_attention(attn, x), atol=1e-5, rtol=1e-5)


def test_official_cnn_layout_and_last_block():
    cnn = MaskCNN(3, preset("official_base").cnn_channels, 512)
    names = [n for n, _ in cnn.named_children()]
    assert names == ["conv1", "norm1", "conv2", "norm2", "conv3", "norm3", "conv4", "norm4",
                     "conv5", "norm5", "conv6"]
    assert cnn.conv1.kernel_size == (7, 7) and cnn.conv1.stride == (1, 1)
    assert all(getattr(cnn, f"conv{i}").stride == (2, 2) for i in range(2, 6))
    assert cnn.conv6.stride == (1, 1)
    assert cnn.last_block_names() == ("conv5", "norm5", "conv6")
    # 256 px mask -> 16x16 tokens, the official positional embedding's 256 + 1 rows.
    assert preset("official_base").token_grid == 16 and preset("official_base").num_tokens == 257
    with torch.no_grad():
        assert cnn(torch.zeros(1, 3, 64, 64)).shape == (1, 512, 4, 4)


def test_output_shapes_and_cls_token_last():
    enc = encoder()
    mask = label_mask(random_labels(3, 16), NUM_CLASSES)
    with torch.no_grad():
        proj, tokens = enc(mask)
        assert proj.shape == (3, 16) and tokens.shape == (3, 16, 64)
        # The cls token is the last position: without final_ln it is the transformer's last
        # output row, and its positional row is positional_embedding[:, 0].
        enc.final_ln = None
        x = enc.cnn(enc.cnn_input(mask)).flatten(2).transpose(1, 2)
        pos = enc.positional_embedding
        seq = torch.cat([x + pos[:, 1:], (enc.cls_token + pos[:, :1]).expand(3, -1, -1)], 1)
        out = enc.transformer(seq)
        proj2, tokens2 = enc(mask)
    torch.testing.assert_close(proj2, out[:, -1])
    torch.testing.assert_close(tokens2, out[:, :-1].transpose(1, 2))


def test_prompts_change_output_not_token_count():
    mask = label_mask(random_labels(2, 16), NUM_CLASSES)
    plain, prompted = encoder(), encoder(prompts=3)
    assert plain.prompts is None and plain.prompt_count == 0
    assert prompted.prompts.shape == (2, 3, 16)   # one set per transformer layer
    with torch.no_grad():
        p0, t0 = plain(mask)
        p1, t1 = prompted(mask)
    assert t1.shape == t0.shape                    # prompts are dropped from every output
    assert (p1 - p0).abs().max() > 1e-3 and (t1 - t0).abs().max() > 1e-3
    prompted.add_prompts(0)
    with torch.no_grad():
        torch.testing.assert_close(prompted(mask)[1], t0)


def test_prompts_reach_every_layer_and_are_seeded():
    enc = encoder(prompts=2, seed=5)
    proj, tokens = enc(label_mask(random_labels(2, 16), NUM_CLASSES))
    (proj.square().sum() + tokens.square().sum()).backward()
    per_layer = enc.prompts.grad.abs().sum(dim=(1, 2))
    assert (per_layer > 0).all()                   # layer i reads prompts[i]
    assert torch.equal(encoder(prompts=2, seed=5).prompts, enc.prompts)
    assert not torch.equal(encoder(prompts=2, seed=6).prompts, enc.prompts)
    # VPT's bound: uniform in ±sqrt(6 / (fan_in of the output conv + width)).
    bound = math.sqrt(6 / (16 * 9 + 16))
    assert enc.prompts.abs().max() <= bound


def test_unlabeled_pixels_feed_their_own_input():
    enc = encoder()
    labels = random_labels(1, 16, unlabeled=False)
    mask = label_mask(labels, NUM_CLASSES)
    cnn_in = enc.cnn_input(mask)
    assert cnn_in.shape[1] == NUM_CLASSES + 2 and cnn_in[:, -1].abs().max() == 0
    holes = labels.clone()
    holes[:, :4, :4] = 0
    cnn_in = enc.cnn_input(label_mask(holes, NUM_CLASSES))
    assert cnn_in[0, -1, :4, :4].eq(1).all() and cnn_in[0, -1].sum() == 16
    with torch.no_grad():
        assert (enc(label_mask(holes, NUM_CLASSES))[0] - enc(mask)[0]).abs().max() > 1e-4


def test_token_count_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="mask_resolution"):
        encoder()(label_mask(random_labels(1, 32), NUM_CLASSES))

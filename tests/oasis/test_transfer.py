"""CAT's changes to a pretrained model (paper §3.2) keep its function at initialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cat_models.oasis.sampling import sample_images, training_free_generator
from cat_models.oasis.transfer import (
    CATSPADE,
    AffinityLayer,
    cat_generator,
    frozen_d_prefixes,
    reinit_label_inputs,
    replace_d_head,
)
from tests.oasis.conftest import one_hot


def test_affinity_layer_maps_target_to_source_and_keeps_unlabeled():
    a = np.array([[0.7, 0.0], [0.3, 0.0], [0.0, 1.0]])        # C_S = 3, C_T = 2
    layer = AffinityLayer(a)
    labels = torch.tensor([[[0, 1, 2]]])
    out = layer(one_hot(labels, 2))[0, :, 0]                 # [C_S+1, 3 pixels]
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.7, 0.0], [0.0, 0.3, 0.0],
                             [0.0, 0.0, 1.0]])
    assert torch.allclose(out, expected)


def test_permutation_affinity_reproduces_source_on_permuted_labels(source_models):
    cfg, g, _ = source_models
    g.eval()
    perm = [3, 1, 5, 2, 4]                                  # target class k -> source perm[k-1]
    a = np.zeros((5, 5))
    a[np.array(perm) - 1, np.arange(5)] = 1.0
    cat = training_free_generator(g, a)
    target = torch.randint(0, 6, (2, 32, 32))
    source = torch.tensor([0] + perm)[target]
    z = torch.randn(2, cfg.z_dim)
    with torch.no_grad():
        assert torch.allclose(cat(one_hot(target, 5), z), g(one_hot(source, 5), z), atol=1e-6)
    assert any(isinstance(m, CATSPADE) for m in cat.modules())


@pytest.mark.parametrize("split,residual", [(True, True), (True, False), (False, True)])
def test_cat_switches_start_at_the_affinity_only_model(source_models, split, residual):
    cfg, g, _ = source_models
    g.eval()
    a = np.random.default_rng(0).random((5, 3))
    a /= a.sum(0)
    plain = cat_generator(g, 3, a, split=False, residual=False).eval()
    switched = cat_generator(g, 3, a, split=split, residual=residual).eval()
    names = {n for n, _ in switched.named_parameters()}
    assert any("conv_gamma" in n for n in names) == split
    assert any("res_beta" in n for n in names) == residual
    labels, z = one_hot(torch.randint(0, 4, (2, 32, 32)), 3), torch.randn(2, cfg.z_dim)
    with torch.no_grad():
        assert torch.allclose(switched(labels, z), plain(labels, z), atol=1e-6)
    spade = switched.body[0].norm_0
    if split:
        assert torch.equal(spade.conv_gamma.weight, g.body[0].norm_0.mlp_shared[0].weight)
        assert torch.equal(spade.conv_beta.weight, g.body[0].norm_0.mlp_shared[0].weight)
    if residual:
        assert spade.res_gamma.weight.abs().sum() == 0
        assert spade.res_gamma.in_channels == 4


def test_cat_rejects_wrong_affinity_shape(source_models):
    _, g, _ = source_models
    with pytest.raises(ValueError, match=r"\(5, 3\)"):
        cat_generator(g, 3, np.ones((4, 3)))


def test_reinit_label_inputs_keeps_noise_columns(source_models):
    cfg, g, _ = source_models
    new = reinit_label_inputs(g, 3, miner=True)
    z = cfg.z_dim
    assert new.fc.in_channels == z + 4
    assert torch.equal(new.fc.weight[:, :z], g.fc.weight[:, :z])
    first = new.body[1].norm_1.mlp_shared[0]
    assert torch.equal(first.weight[:, :z], g.body[1].norm_1.mlp_shared[0].weight[:, :z])
    out = new(one_hot(torch.randint(0, 4, (2, 32, 32)), 3))
    assert out.shape == (2, 3, 32, 32)
    assert g.fc.in_channels == z + 6                     # source untouched


def test_new_d_head_and_freezed_prefixes(source_models):
    _, _, d = source_models
    new = replace_d_head(d, 3)
    assert new.layer_up_last.out_channels == 5 and d.layer_up_last.out_channels == 7
    assert torch.equal(new.body_up[0].conv2[1].weight_orig, d.body_up[0].conv2[1].weight_orig)
    assert frozen_d_prefixes(new, 5) == tuple(f"body_down.{i}" for i in range(4)) + ("body_up.0",)
    with pytest.raises(ValueError, match="freeze_d"):
        frozen_d_prefixes(new, 9)                        # this tiny D has 4+4+1 layers


def test_d_head_inits_keep_the_fake_channel_or_read_the_source_through_a(source_models):
    _, _, d = source_models                               # C_S = 5: 7 output channels
    a = np.zeros((5, 3))
    a[[2, 0, 4], [0, 1, 2]] = 1.0                         # target 1 <- source 3, 2 <- 1, 3 <- 5
    a[1, 2] = 0.25
    weight = AffinityLayer(a).weight
    old = d.layer_up_last
    torch.manual_seed(0)
    fresh = replace_d_head(d, 3).layer_up_last
    torch.manual_seed(0)
    keep = replace_d_head(d, 3, "keep_fake").layer_up_last
    torch.manual_seed(0)
    mapped = replace_d_head(d, 3, "affinity", weight).layer_up_last
    assert not torch.equal(fresh.weight[:2], old.weight[:2])
    for head in (keep, mapped):                           # fake + unlabeled carried over
        assert torch.equal(head.weight[:2], old.weight[:2])
        assert torch.equal(head.bias[:2], old.bias[:2])
    assert torch.equal(keep.weight[2:], fresh.weight[2:])  # same draws, class rows fresh
    # channel k+1 <-> label channel k: target class t (channel t+1) = sum_s A[s, t] source s
    assert torch.equal(mapped.weight[2], old.weight[4]) and torch.equal(mapped.bias[3],
                                                                         old.bias[2])
    assert torch.allclose(mapped.weight[4], old.weight[6] + 0.25 * old.weight[3])
    with pytest.raises(ValueError, match="needs the \\[6, 4\\] affinity weight"):
        replace_d_head(d, 3, "affinity", weight[:, :3])
    with pytest.raises(ValueError, match="d_head: expected one of"):
        replace_d_head(d, 3, "warm")


def test_sample_images_is_deterministic_and_checks_labels(source_models):
    _, g, _ = source_models
    labels = torch.randint(0, 6, (3, 32, 32))
    a = sample_images(g, labels, seed=1, batch_size=2)
    assert a.shape == (3, 3, 32, 32)
    assert torch.equal(a, sample_images(g, labels, seed=1, batch_size=2))
    assert not torch.equal(a, sample_images(g, labels, seed=2))
    with pytest.raises(ValueError, match="exceeds"):
        sample_images(g, labels + 6)

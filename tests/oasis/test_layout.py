"""The memory layout OASIS trains in (`cat_models.oasis.train.MEMORY_FORMAT`) is a speed
choice only: G and D compute the same function in it, the loop really uses it, and the
generator's label map reaches every SPADE already resized and laid out."""

from __future__ import annotations

import copy

import torch

from cat_models.metrics.fid import clean_resize, quantise
from cat_models.oasis import build_discriminator, build_generator, build_plan, train_oasis
from cat_models.oasis import train as oasis_train
from cat_models.oasis.norms import SPADE, resize_like
from tests.oasis.conftest import one_hot, random_data, tiny_cfg

CL = torch.channels_last


def test_g_and_d_compute_the_same_function_in_the_training_layout():
    cfg = tiny_cfg()
    torch.manual_seed(0)
    g, d = build_generator(cfg, 4), build_discriminator(cfg, 4)
    labels = one_hot(torch.randint(0, 5, (4, *cfg.resolution)), 4)
    z = torch.randn(4, cfg.z_dim)
    runs = []
    for layout in (torch.contiguous_format, oasis_train.MEMORY_FORMAT):
        gg = copy.deepcopy(g).to(memory_format=layout)
        dd = copy.deepcopy(d).to(memory_format=layout)
        image = gg(labels.contiguous(memory_format=layout), z)
        logits = dd(image)
        logits.square().mean().backward()
        grads = {n: p.grad for n, p in gg.named_parameters()}
        runs.append((image.detach(), logits.detach(), grads))
    (img_a, out_a, grad_a), (img_b, out_b, grad_b) = runs
    torch.testing.assert_close(img_b, img_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_b, out_a, rtol=1e-4, atol=1e-5)
    for name, grad in grad_a.items():
        if grad.norm() > 1e-8:   # conv biases before a batch norm: zero up to rounding
            torch.testing.assert_close(grad_b[name], grad, rtol=1e-3, atol=1e-7)


def test_the_training_loop_runs_in_the_training_layout():
    cfg = tiny_cfg()
    data = random_data(8, 4)
    plan = build_plan("scratch", None, None, 4, cfg=cfg, seed=0)
    state = train_oasis(plan, data, cfg, 1, seed=0)
    for module in (plan.generator, plan.discriminator, state.ema):
        convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
        weights = [getattr(m, "weight_orig", m.weight) for m in convs]
        assert all(w.is_contiguous(memory_format=oasis_train.MEMORY_FORMAT) for w in weights)


def test_every_spade_gets_a_resized_channels_last_map():
    cfg = tiny_cfg()
    g = build_generator(cfg, 4).to(memory_format=CL)
    seen = []
    for m in g.modules():
        if isinstance(m, SPADE):
            m.register_forward_pre_hook(lambda mod, args: seen.append(args))
    g(one_hot(torch.randint(0, 5, (2, *cfg.resolution)), 4), torch.randn(2, cfg.z_dim))
    assert seen
    for x, seg in seen:
        assert seg.shape[2:] == x.shape[2:]
        assert seg.is_contiguous(memory_format=CL)
    seg = torch.randn(2, 3, 8, 8)
    assert resize_like(seg, torch.empty(2, 1, 8, 8)) is seg
    assert resize_like(seg, torch.empty(2, 1, 16, 16)).shape[2:] == (16, 16)


def test_inception_input_is_channels_last():
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    resized = clean_resize(quantise(images))
    assert resized.shape == (2, 3, 299, 299)
    assert resized.is_contiguous(memory_format=CL)

"""Every baseline, switch and stage trains exactly the parameters it should (paper §4.1, Tab. 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cat_models.oasis import BASELINES, build_plan
from cat_models.recipes import trainable_names

A = np.full((5, 3), 0.2)


def names(module):
    return {n for n, _ in module.named_parameters()}


def plan_at(name, source_models, step=0, **options):
    cfg, g, d = source_models
    plan = build_plan(name, g, d, 3, cfg=cfg, **options)
    plan.apply_stage(step)
    return plan, trainable_names(plan.generator), trainable_names(plan.discriminator)


def test_registry_lists_all_methods():
    assert set(BASELINES) == {"scratch", "transfergan", "freezed", "minegan", "bsa",
                              "cgantransfer", "cat"}
    with pytest.raises(KeyError, match="choose from"):
        build_plan("stylegan", None, None, 3)


def test_scratch_and_transfergan_train_everything(source_models):
    for name in ("scratch", "transfergan"):
        plan, g, d = plan_at(name, source_models)
        assert g == names(plan.generator) and d == names(plan.discriminator)
        assert plan.discriminator.layer_up_last.out_channels == 5
    _, gen, _ = source_models
    scratch, _, _ = plan_at("scratch", source_models)
    assert not torch.equal(scratch.generator.conv_img.weight, gen.conv_img.weight)


@pytest.mark.parametrize("k", [0, 2, 5])
def test_freezed_freezes_first_k_d_layers(source_models, k):
    plan, g, d = plan_at("freezed", source_models, freeze_d=k)
    order = plan.discriminator.layer_names()
    frozen = names(plan.discriminator) - d
    assert {".".join(n.split(".")[:2]) for n in frozen} == set(order[:k])
    assert g == names(plan.generator)


def test_bsa_trains_only_label_input_layers(source_models):
    plan, g, d = plan_at("bsa", source_models)
    assert g and all(n.startswith("fc.") or ".mlp_shared.0." in n for n in g)
    assert len(g) == 2 + 2 * sum(1 for n in names(plan.generator) if "mlp_shared.0.weight" in n)
    assert d == names(plan.discriminator)


def test_minegan_two_stages(source_models):
    plan, g1, _ = plan_at("minegan", source_models, step=0, stage1_iters=4)
    assert any(n.startswith("condition.miner") for n in g1)
    assert all(n.startswith(("condition.miner", "fc.")) or "mlp_shared.0" in n for n in g1)
    plan.apply_stage(4)
    assert trainable_names(plan.generator) == names(plan.generator)


def test_cgantransfer_trains_scale_shift_affinity_residuals_with_regulariser(source_models):
    plan, g, _d = plan_at("cgantransfer", source_models, l1=0.5, l2=0.0)
    assert "condition.affinity.weight" in g
    assert any("mlp_gamma" in n for n in g) and any("res_beta" in n for n in g)
    assert not any(n.startswith(("fc.", "conv_img")) or ".conv_0." in n for n in g)
    weight = plan.generator.condition.affinity.weight
    assert not np.allclose(weight.detach()[1:, 1:].numpy(), A)      # random, not uniform A
    reg = plan.regulariser(plan.generator)
    assert torch.isclose(reg, 0.5 * weight.abs().sum())
    reg.backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_cat_stages_and_switches(source_models):
    plan, g1, d = plan_at("cat", source_models, affinity=A, freeze_d=2, stage1_iters=3)
    assert "condition.affinity.weight" in g1
    assert all(any(p in n for p in ("affinity", "conv_gamma", "conv_beta", "res_"))
               for n in g1)
    assert any("res_gamma" in n for n in g1) and any("conv_beta" in n for n in g1)
    assert not any(n.startswith(("body_down.0.", "body_down.1.")) for n in d)
    assert any(n.startswith("body_down.2.") for n in d)
    assert torch.allclose(plan.generator.condition.affinity.weight[1:, 1:],
                          torch.tensor(A, dtype=torch.float32))
    for step, expect_all in ((2, False), (3, True), (100, True)):
        plan.apply_stage(step)
        assert (trainable_names(plan.generator) == names(plan.generator)) == expect_all
    _, g_one, _ = plan_at("cat", source_models, affinity=A, two_stage=False)
    assert len(g_one) > len(g1)
    _, g_nosplit, _ = plan_at("cat", source_models, affinity=A, split=False, residual=False)
    assert g_nosplit and all("mlp_shared.0" in n or "affinity" in n for n in g_nosplit)
    _, _, d0 = plan_at("cat", source_models, affinity=A, freeze_d=0)
    assert len(d0) > len(d)
    fixed, f1, _ = plan_at("cat", source_models, affinity=A, stage1_iters=3,
                           train_affinity=False)
    assert f1 == g1 - {"condition.affinity.weight"}          # stage 1 less A
    fixed.apply_stage(3)
    assert trainable_names(fixed.generator) == names(fixed.generator) - {
        "condition.affinity.weight"}                          # stage 2: all of G but A

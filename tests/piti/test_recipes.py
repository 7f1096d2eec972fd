"""PITI recipes: each Table 5 switch and baseline trains exactly its parameter set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cat_models.piti import RECIPES, build_plan, label_mask, recipe_options
from cat_models.piti.recipes import DEFAULT_PROMPT_COUNT
from cat_models.recipes import trainable_names
from tests.piti.tiny_models import NUM_CLASSES, random_labels, tiny_model

CT = 3
# The tiny CNN has widths (8, 16): conv1 + norm1, conv2 + norm2 (stride 2), output conv3.
LAST_BLOCK = {f"encoder.cnn.{n}.{p}" for n in ("conv2", "norm2", "conv3") for p in ("weight", "bias")}
CONV1 = {"encoder.cnn.conv1.weight", "encoder.cnn.conv1.bias"}
A, PROMPTS = {"encoder.affinity.weight"}, {"encoder.prompts"}


@pytest.fixture(scope="module")
def source():
    return tiny_model(seed=1)


def names(model) -> set[str]:
    return set(dict(model.named_parameters()))


def test_registry_and_options_come_from_signatures():
    assert set(RECIPES) == {"cat", "finetune_all", "from_glide", "training_free"}
    assert recipe_options("cat") == ["affinity", "use_affinity", "prompt_count", "fix_decoder",
                                     "seed"]
    assert recipe_options("finetune_all") == ["seed"]
    assert recipe_options("from_glide") == ["stage1_iters", "seed"]
    assert recipe_options("training_free") == ["affinity", "seed"]
    with pytest.raises(KeyError, match="unknown; choose from"):
        recipe_options("glide")


def test_unknown_options_and_missing_models_are_errors(source):
    with pytest.raises(ValueError, match=r"'cat': unknown option\(s\) \['freeze_d'\]"):
        build_plan("cat", source, CT, freeze_d=3)
    with pytest.raises(ValueError, match="needs a source PITI model"):
        build_plan("cat", None, CT)
    with pytest.raises(ValueError, match="needs `generic`"):
        build_plan("from_glide", source, CT)
    with pytest.raises(ValueError, match="affinity given with use_affinity=False"):
        build_plan("cat", source, CT, affinity=np.ones((NUM_CLASSES, CT)) / NUM_CLASSES,
                   use_affinity=False)


def test_cat_fixdec_trains_a_prompts_and_the_last_cnn_block(source):
    plan = build_plan("cat", source, CT)
    assert plan.finetune and plan.model.config.prompt_count == DEFAULT_PROMPT_COUNT
    assert trainable_names(plan.model) == A | PROMPTS | LAST_BLOCK


@pytest.mark.parametrize("options,expected", [
    ({"prompt_count": 0}, A | LAST_BLOCK),                                   # w/o prompts
    ({"use_affinity": False}, CONV1 | PROMPTS | LAST_BLOCK),                 # w/o CAT
    ({"use_affinity": False, "prompt_count": 0}, CONV1 | LAST_BLOCK),        # FixDec only
    ({"fix_decoder": False}, None),                                          # w/o FixDec: all
])
def test_each_switch_sets_exactly_its_trainable_set(source, options, expected):
    plan = build_plan("cat", source, CT, **options)
    model = plan.model
    assert ("encoder.affinity.weight" in names(model)) == options.get("use_affinity", True)
    assert ("encoder.prompts" in names(model)) == (options.get("prompt_count", DEFAULT_PROMPT_COUNT) > 0)
    assert trainable_names(model) == (names(model) if expected is None else expected)


def test_finetune_all_is_table5_first_row(source):
    plan = build_plan("finetune_all", source, CT, seed=2)
    row = build_plan("cat", source, CT, use_affinity=False, prompt_count=0, fix_decoder=False,
                     seed=2)
    assert plan.name == "finetune_all" and trainable_names(plan.model) == names(plan.model)
    assert names(plan.model) == names(source)          # no A, no prompts
    assert plan.model.encoder.cnn.conv1.in_channels == CT + 2
    a, b = plan.model.state_dict(), row.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_from_glide_trains_the_encoder_first_then_everything(source):
    generic = tiny_model(seed=9)
    plan = build_plan("from_glide", source, CT, generic=generic, stage1_iters=10)
    encoder = {n for n in names(plan.model) if n.startswith("encoder.")}
    assert plan.apply_stage(0) == 0 and trainable_names(plan.model) == encoder
    assert plan.apply_stage(9) == 0
    assert plan.apply_stage(10) == 1 and trainable_names(plan.model) == names(plan.model)
    gd = generic.decoder.state_dict()
    assert all(torch.equal(v, gd[k]) for k, v in plan.model.decoder.state_dict().items())
    single = build_plan("from_glide", source, CT, generic=generic, stage1_iters=0)
    assert len(single.stages) == 1 and trainable_names(single.model) == names(single.model)


def test_training_free_has_nothing_to_train(source):
    plan = build_plan("training_free", source, CT, seed=3)
    assert not plan.finetune and not plan.model.training
    assert trainable_names(plan.model) == set() and plan.apply_stage(0) == -1
    assert names(plan.model) - names(source) == A


def test_plans_are_seeded_and_leave_the_global_rng_alone(source):
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    a = build_plan("cat", source, CT, seed=4, use_affinity=False)
    assert torch.equal(torch.rand(1), expected)
    b = build_plan("cat", source, CT, seed=4, use_affinity=False)
    c = build_plan("cat", source, CT, seed=5, use_affinity=False)
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["encoder.prompts"], sc["encoder.prompts"])
    assert not torch.equal(sa["encoder.cnn.conv1.weight"], sc["encoder.cnn.conv1.weight"])
    assert a.options == {"method": "cat", "seed": 4, "use_affinity": False}


def test_a_fixdec_step_moves_only_the_trainable_parameters(source):
    plan = build_plan("cat", source, CT)
    model = plan.model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    mask = label_mask(random_labels(2, 16, num_classes=CT), CT)
    model(torch.randn(2, 3, 16, 16), torch.tensor([5, 50]), mask).square().mean().backward()
    opt.step()
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    # conv2's bias feeds an InstanceNorm, which removes it: its gradient is exactly zero.
    assert moved == trainable_names(model) - {"encoder.cnn.conv2.bias"}

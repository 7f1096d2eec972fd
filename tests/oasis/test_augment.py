"""Discriminator augmentation: label maps move with the images, draws follow the step's seed,
the loop stays deterministic and resumable, and a run without it is unchanged."""

from __future__ import annotations

import pytest
import torch

from cat_models.oasis import augment, build_discriminator, build_generator, build_plan, train_oasis
from cat_models.oasis.config import OasisConfig
from tests.oasis.conftest import one_hot, random_data, tiny_cfg


def _draw(policy: str, batch: int = 4, size=(32, 32), seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return augment.draw(augment.parse_augment_policy(policy), batch, size, gen)


def test_policy_names_are_checked_and_ordered():
    assert augment.parse_augment_policy("translation, color") == ("color", "translation")
    assert augment.parse_augment_policy("") == ()
    with pytest.raises(ValueError, match=r"unknown policy \['flip'\]"):
        augment.parse_augment_policy("color,flip")
    assert OasisConfig(resolution=(32, 32), num_res_blocks=4, d_augment="cutout,color").d_augment == "color,cutout"
    with pytest.raises(ValueError, match="d_augment"):
        OasisConfig(resolution=(32, 32), num_res_blocks=4, d_augment="rotate")


def test_no_policy_draws_nothing_from_the_step_generator():
    gen = torch.Generator().manual_seed(3)
    before = gen.get_state()
    assert augment.draw((), 4, (32, 32), gen) is None
    assert torch.equal(gen.get_state(), before)
    images, labels = torch.randn(4, 3, 8, 8), one_hot(torch.randint(0, 3, (4, 8, 8)), 3)
    out = augment.apply(None, images, labels)
    assert out[0] is images and out[1] is labels and out[2] is None


def test_translation_moves_the_label_map_with_the_image_and_unlabels_the_border():
    """Each pixel's colour encodes its class: after the shift, image and label still agree
    wherever the label is a class, and uncovered pixels are unlabeled (channel 0)."""
    torch.manual_seed(0)
    classes = torch.randint(1, 4, (4, 32, 32))
    labels = one_hot(classes, 3)
    images = classes.float().unsqueeze(1).repeat(1, 3, 1, 1) / 4   # class k -> k / 4
    params = _draw("translation")
    assert params.shift.abs().max() <= 4 and params.shift.abs().sum() > 0
    moved_images, moved_labels, _ = augment.apply(params, images, labels)
    moved = moved_labels.argmax(dim=1)
    labelled = moved > 0
    assert torch.equal(moved_images[:, 0][labelled], moved[labelled].float() / 4)
    assert (moved_images[:, 0][~labelled] == 0).all()
    for i, (dy, dx) in enumerate(params.shift.tolist()):
        uncovered = (~labelled[i]).sum().item()
        assert uncovered == 32 * 32 - (32 - abs(dy)) * (32 - abs(dx))
        if dy == 0 and dx == 0:
            continue
        # the shift is the draw: a labelled pixel came from (y - dy, x - dx)
        y, x = torch.nonzero(labelled[i])[0].tolist()
        assert moved[i, y, x] == classes[i, y - dy, x - dx]


def test_stacked_images_share_their_label_maps_draws_and_gradients_flow():
    """fake / real / mixed stacked (3·B images) get the transform of their label map."""
    labels = one_hot(torch.randint(0, 3, (2, 32, 32)), 3)
    base = torch.rand(2, 3, 32, 32, requires_grad=True)
    params = _draw("color,translation,cutout", batch=2, seed=4)
    stacked = torch.cat([base, base, base])
    mask = torch.ones(2, 1, 32, 32)
    out, out_labels, out_mask = augment.apply(params, stacked, labels, mask)
    assert torch.equal(out[:2], out[2:4]) and torch.equal(out[:2], out[4:])
    # the mask moves with the images (uncovered pixels 0); cut-out leaves it alone
    uncovered = sum(32 * 32 - (32 - abs(dy)) * (32 - abs(dx)) for dy, dx in params.shift.tolist())
    assert int((out_mask == 0).sum()) == uncovered
    # cut-out region: unlabeled in the label map and zero in the image
    cut = out_labels.argmax(dim=1) == 0
    assert cut.sum() >= 2 * 16 * 16
    out.sum().backward()
    assert base.grad is not None and base.grad.abs().sum() > 0


def test_colour_leaves_labels_alone_and_a_rank_slice_equals_the_global_draws():
    labels = one_hot(torch.randint(0, 3, (4, 16, 16)), 3)
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    params = _draw("color", size=(16, 16))
    out, out_labels, _ = augment.apply(params, images, labels)
    assert out_labels is labels and not torch.allclose(out, images)
    half = slice(2, 4)
    part, _, _ = augment.apply(params.part(half), images[half], labels[half])
    assert torch.allclose(part, out[half])


def _plan(cfg):
    torch.manual_seed(0)
    g, d = build_generator(cfg, 5), build_discriminator(cfg, 5)
    return build_plan("cat", g, d, 3, cfg=cfg, seed=0, affinity=torch.full((5, 3), 0.2).numpy(),
                      stage1_iters=1)


def _weights(state):
    return torch.cat([p.detach().flatten() for p in state.plan.generator.parameters()] +
                     [p.detach().flatten() for p in state.plan.discriminator.parameters()])


def test_training_with_augmentation_is_seeded_resumable_and_leaves_plain_runs_alone(tmp_path):
    torch.set_num_threads(1)
    data = random_data(8, 3)
    plain = tiny_cfg()
    aug = plain.replace(d_augment="color,translation,cutout")
    a = train_oasis(_plan(aug), data, aug, 3, seed=1, report_every=0)
    b = train_oasis(_plan(aug), data, aug, 3, seed=1, report_every=0)
    assert torch.equal(_weights(a), _weights(b))
    p = train_oasis(_plan(plain), data, plain, 3, seed=1, report_every=0)
    assert not torch.allclose(_weights(a), _weights(p))
    # resume from a checkpoint at step 2 repeats step 3 exactly
    train_oasis(_plan(aug), data, aug, 2, seed=1, report_every=0,
                checkpoint_dir=tmp_path, checkpoint_every=2)
    resumed = train_oasis(_plan(aug), data, aug, 3, seed=1, report_every=0,
                          resume=tmp_path / "latest.pt")
    assert torch.equal(_weights(resumed), _weights(a))

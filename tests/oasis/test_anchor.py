"""The absent-class anchor: probes, the classes it guards, and what it does to a run."""

from __future__ import annotations

import pytest
import torch

from cat_models.oasis import build_plan, train_oasis
from cat_models.oasis.anchor import (
    HUBER_BETA,
    AbsentClassAnchor,
    images_showing,
    present_classes,
)
from cat_models.oasis.baselines import recipe_options
from tests.oasis.conftest import TensorData, one_hot, random_data, tiny_cfg
from tests.oasis.test_train import tiny_plan


def without_class(data: TensorData, cls: int, instead: int) -> TensorData:
    """The same items with label `cls` drawn as `instead` (so the set never shows `cls`)."""
    items = []
    for it in data:
        label = it["label"].clone()
        label[label == cls] = instead
        items.append({**it, "label": label})
    return TensorData(items, data.num_classes)


def test_fit_lists_the_classes_no_item_shows():
    data = without_class(random_data(10, 4, seed=1), 3, 1)
    assert present_classes(data, 4).tolist() == [True, True, True, False, True]
    anchor = AbsentClassAnchor(torch.nn.Identity(), 1.0)
    assert anchor.fit(data, 4) == [3] and anchor.active
    assert anchor.fit(random_data(10, 4, seed=1), 4) == [] and not anchor.active
    with pytest.raises(ValueError, match="anchor_absent"):
        AbsentClassAnchor(torch.nn.Identity(), -1.0)


def test_probe_relabels_one_shown_class_of_each_map_as_an_absent_one():
    labels = torch.tensor([[[1, 1, 2, 0]], [[0, 0, 0, 0]], [[2, 4, 4, 1]]])   # [3, 1, 4]
    onehot = one_hot(labels, 4)
    anchor = AbsentClassAnchor(torch.nn.Identity(), 1.0)
    anchor.classes = [3]
    draws = torch.tensor([[0.9, 0.0], [0.5, 0.5], [0.4, 0.99]])
    probe, mask = anchor.probe(onehot, draws)
    relabelled = probe.argmax(1)
    # map 0 shows (1, 2): u0 = 0.9 picks 2; map 1 shows nothing; map 2 shows (1, 2, 4): picks 2
    assert relabelled.tolist() == [[[1, 1, 3, 0]], [[0, 0, 0, 0]], [[3, 4, 4, 1]]]
    assert mask[:, 0].tolist() == [[[0, 0, 1, 0]], [[0, 0, 0, 0]], [[1, 0, 0, 0]]]
    assert torch.equal(onehot, one_hot(labels, 4))          # the training maps are untouched
    assert torch.allclose(probe.sum(1), torch.ones(3, 1, 4))
    # the loss is the mean over masked pixels and channels
    drawn, ref = torch.zeros(3, 3, 1, 4), torch.zeros(3, 3, 1, 4)
    drawn[0, :, 0, 2] = 0.5
    drawn[1] = 7.0                                           # unmasked: ignored
    huber = 0.5 - HUBER_BETA / 2                              # |d| - beta/2 above beta
    assert anchor.loss(drawn, ref, mask)[0].item() == pytest.approx(huber * 3 / 6)


def test_max_images_anchors_the_classes_few_items_show():
    labels = [torch.tensor([[1, 1], [2, 0]]), torch.tensor([[1, 1], [1, 1]]),
              torch.tensor([[4, 1], [2, 2]])]
    data = TensorData([{"image": torch.zeros(3, 2, 2), "label": lab} for lab in labels], 4)
    assert images_showing(data, 4).tolist() == [1, 3, 2, 0, 1]
    fits = {k: AbsentClassAnchor(torch.nn.Identity(), 1.0, k).fit(data, 4) for k in (0, 1, 2, 9)}
    assert fits == {0: [3], 1: [3, 4], 2: [2, 3, 4], 9: [1, 2, 3, 4]}
    with pytest.raises(ValueError, match="anchor_max_images"):
        AbsentClassAnchor(torch.nn.Identity(), 1.0, -1)
    with pytest.raises(ValueError, match="anchor_max_images needs anchor_absent"):
        tiny_plan(tiny_cfg(), anchor_max_images=3)


def test_a_shown_class_is_never_relabelled_as_itself():
    labels = torch.tensor([[[1, 1, 2, 0]], [[3, 3, 3, 3]], [[2, 2, 2, 2]]])
    anchor = AbsentClassAnchor(torch.nn.Identity(), 1.0, max_images=9)
    anchor.classes = [1, 2, 3]
    # map 0: picks 1 (u0 = 0), then class number floor(0.99 * 2) of (2, 3) = 3; map 1: picks
    # 3, then number 0 of (1, 2) = 1; map 2: picks 2, number 1 of (1, 3) = 3
    draws = torch.tensor([[0.0, 0.99], [0.5, 0.0], [0.3, 0.6]])
    probe, mask = anchor.probe(one_hot(labels, 3), draws)
    assert probe.argmax(1).tolist() == [[[3, 3, 2, 0]], [[1, 1, 1, 1]], [[3, 3, 3, 3]]]
    assert mask[:, 0].tolist() == [[[1, 1, 0, 0]], [[1, 1, 1, 1]], [[1, 1, 1, 1]]]
    anchor.classes = [2]                      # the only anchored class is the one shown
    _, mask = anchor.probe(one_hot(labels[2:], 3), draws[2:])
    assert mask.sum() == 0


def test_each_ranks_share_of_the_loss_averages_to_the_global_mean():
    """Under DDP each rank divides its sum by the global pixel count and multiplies by the
    world size; DDP's gradient average then gives the single-process mean."""
    anchor = AbsentClassAnchor(torch.nn.Identity(), 1.0)
    gen = torch.Generator().manual_seed(0)
    drawn, ref = torch.randn(4, 3, 5, 5, generator=gen), torch.randn(4, 3, 5, 5, generator=gen)
    mask = (torch.rand(4, 1, 5, 5, generator=gen) > 0.6).float()
    mask[3] = 1.0                                   # rank 1 holds far more masked pixels
    single, mean = anchor.loss(drawn, ref, mask)
    total_pixels = mask.sum() * 3
    parts = (slice(0, 2), slice(2, 4))
    # the all-reduce of two ranks: [pixels, sum] of both halves
    sums = sum(torch.stack([mask[p].sum() * 3, anchor.loss(drawn[p], ref[p], mask[p])[0]
                            * mask[p].sum() * 3]) for p in parts)
    assert sums[0] == total_pixels

    def reduce(x):
        return sums.clone()
    reported = [anchor.loss(drawn[p], ref[p], mask[p], 2, reduce) for p in parts]
    shares = [term for term, _ in reported]
    assert (shares[0] + shares[1]) / 2 == pytest.approx(single.item(), rel=1e-6)
    assert [value for _, value in reported] == pytest.approx([mean, mean], rel=1e-6)
    assert mean == pytest.approx(single.item())
    assert shares[0].item() != pytest.approx(shares[1].item(), rel=0.1)   # unequal halves


@pytest.mark.slow
def test_an_anchored_run_resumes_exactly(tmp_path):
    """The frozen copy's spectral-norm buffers move at each forward: the checkpoint keeps
    them, so step 3 after a resume from step 2 equals step 3 of the straight run."""
    torch.set_num_threads(1)
    cfg = tiny_cfg()
    data = without_class(random_data(12, 3), 3, 2)
    straight = train_oasis(tiny_plan(cfg, stage1_iters=1, anchor_absent=5.0), data, cfg, 3,
                           seed=2, report_every=1)
    train_oasis(tiny_plan(cfg, stage1_iters=1, anchor_absent=5.0), data, cfg, 2, seed=2,
                checkpoint_dir=tmp_path, checkpoint_every=2)
    resumed = train_oasis(tiny_plan(cfg, stage1_iters=1, anchor_absent=5.0), data, cfg, 3,
                          seed=2, resume=tmp_path / "latest.pt", report_every=1)
    assert straight.history[-1]["g_anchor"] > 0
    assert resumed.history[-1]["g_anchor"] == straight.history[-1]["g_anchor"]
    for a, b in ((straight.plan.generator, resumed.plan.generator),
                 (straight.ema, resumed.ema),
                 (straight.plan.anchor.start, resumed.plan.anchor.start)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def _absent_distance(plan, start, probe, z):
    """Mean |G - start| over the probe's relabelled pixels, both in train mode."""
    gen = plan.generator.train()
    with torch.no_grad():
        drawn = gen(probe[0], z)
        ref = start(probe[0], z)
    return float(((drawn - ref).abs() * probe[1]).sum() / (probe[1].sum() * 3))


@pytest.mark.slow
def test_anchor_keeps_what_the_start_drew_for_a_class_the_set_never_shows():
    """On a set that never shows class 3, the anchored run draws class 3 (in probes) closer to
    the training-free generator than the plain run; its first anchor loss is exactly 0."""
    torch.set_num_threads(1)
    cfg = tiny_cfg()
    data = without_class(random_data(12, 3), 3, 2)
    distances, first = {}, {}
    probe = z = None
    for weight in (0.0, 20.0):
        reports = []
        plan = tiny_plan(cfg, stage1_iters=4, anchor_absent=weight)
        start = AbsentClassAnchor(plan.generator, 1.0)     # a frozen copy of the start
        train_oasis(plan, data, cfg, 20, seed=1, on_report=reports.append, report_every=1)
        if probe is None:
            start.classes = [3]
            labels = torch.stack([one_hot(it["label"][None], 3)[0] for it in data[:4]])
            probe = start.probe(labels, torch.rand(4, 2, generator=torch.Generator()
                                                   .manual_seed(0)))
            z = torch.randn(4, cfg.z_dim, generator=torch.Generator().manual_seed(1))
        distances[weight] = _absent_distance(plan, start.start, probe, z)
        first[weight] = reports[0].get("g_anchor")
    assert first == {0.0: None, 20.0: 0.0}
    assert distances[20.0] < 0.5 * distances[0.0], distances


def test_a_set_that_shows_every_class_trains_exactly_as_without_the_anchor():
    torch.set_num_threads(1)
    cfg = tiny_cfg()
    data = random_data(8, 3)
    assert present_classes(data, 3).all()
    states = [train_oasis(tiny_plan(cfg, stage1_iters=1, anchor_absent=w), data, cfg, 2,
                          seed=0, report_every=1) for w in (0.0, 5.0)]
    plain, anchored = (s.plan.generator.state_dict() for s in states)
    assert all(torch.equal(plain[k], anchored[k]) for k in plain)
    assert "g_anchor" not in states[1].history[-1]
    assert states[1].plan.anchor.start is None          # the frozen copy is dropped


def test_max_images_puts_the_anchor_on_a_set_that_shows_every_class():
    torch.set_num_threads(1)
    cfg = tiny_cfg()
    data = random_data(8, 3)
    plain = train_oasis(tiny_plan(cfg, stage1_iters=1), data, cfg, 2, seed=0, report_every=1)
    state = train_oasis(tiny_plan(cfg, stage1_iters=1, anchor_absent=5.0, anchor_max_images=8),
                        data, cfg, 2, seed=0, report_every=1)
    assert state.plan.anchor.classes == [1, 2, 3] and state.plan.anchor.active
    assert state.history[0]["g_anchor"] == 0.0       # the copy draws what G draws at step 0
    assert state.history[-1]["g_anchor"] > 0.0
    a, b = plain.plan.generator.state_dict(), state.plan.generator.state_dict()
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_anchor_is_a_cat_option_other_recipes_refuse():
    assert "anchor_absent" in recipe_options("cat")
    with pytest.raises(TypeError, match="anchor_absent"):
        build_plan("transfergan", None, None, 3, anchor_absent=1.0)

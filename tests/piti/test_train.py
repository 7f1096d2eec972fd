"""The PITI training loop: learning signal, trained set, guidance dropout, exact resume,
callbacks, non-finite losses, DDP = single process."""

from __future__ import annotations

import functools
import shutil

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from cat_models.piti.diffusion import make_diffusion
from cat_models.piti.losses import hybrid_loss
from cat_models.piti.train import PitiTrainConfig, pretrain_piti, train_piti
from tests.piti.tiny_eps_model import TinyEpsModel, blocky_data, one_hot_masks

NUM_CLASSES = 3
MASK_FN = functools.partial(one_hot_masks, num_classes=NUM_CLASSES)
train = functools.partial(train_piti, mask_fn=MASK_FN)
pretrain = functools.partial(pretrain_piti, mask_fn=MASK_FN)


def tiny_model(seed=0, **kwargs) -> TinyEpsModel:
    torch.manual_seed(seed)
    return TinyEpsModel(NUM_CLASSES + 1, **kwargs)


def tiny_cfg(**changes) -> PitiTrainConfig:
    values = {"batch_size": 4, "lr": 1e-3, "ema_decay": 0.9, "uncond_p": 0.25}
    values.update(changes)
    return PitiTrainConfig(**values)


def params_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


class Recorder(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, x, t, mask, low_res=None):
        self.calls.append({"x": x.shape, "mask": mask.detach().clone(),
                           "low_res": None if low_res is None else low_res.shape})
        return self.model(x, t, mask, low_res=low_res)


def fixed_loss(model: nn.Module, data, seed: int = 0) -> float:
    """The ε-MSE of the model on all of `data` at fixed timesteps and noise."""
    diffusion = make_diffusion()
    gen = torch.Generator().manual_seed(seed)
    images = torch.stack([it["image"] for it in data])
    masks = MASK_FN(torch.stack([it["label"] for it in data]))
    t = torch.randint(1000, (len(data),), generator=gen)
    noise = torch.randn(images.shape, generator=gen)
    x_t = diffusion.q_sample(images, t, noise)
    with torch.no_grad():
        out = model.eval()(x_t, t, masks)
    return float(hybrid_loss(diffusion, out, images, x_t, t, noise)["mse"].mean())


def test_loss_falls_over_a_short_run():
    torch.set_num_threads(1)
    data = blocky_data(32, NUM_CLASSES, size=8)
    model = tiny_model()
    before = fixed_loss(model, data)
    state = train(model, data, tiny_cfg(batch_size=8, lr=3e-3), 120,
                       trainable=lambda n: True, report_every=0)
    after = fixed_loss(state.ema_model(), data)
    assert after < 0.6 * before, (before, after)
    assert fixed_loss(model, data) < 0.6 * before


def test_only_the_trainable_parameters_change_and_get_an_ema():
    data = blocky_data(8, NUM_CLASSES)
    model = tiny_model()
    before = params_of(model)
    state = train(model, data, tiny_cfg(), 3, trainable=["conv_out.weight", "norm.bias"],
                       report_every=0)
    after = params_of(model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == {"conv_out.weight", "norm.bias"} == set(state.ema)
    assert state.trainable == ["norm.bias", "conv_out.weight"]          # the model's order
    assert {n for n, p in model.named_parameters() if p.requires_grad} == changed
    # EMA (decay 0.9) sits between the start and the live weights
    ema = state.ema["conv_out.weight"]
    assert not torch.equal(ema, after["conv_out.weight"])
    assert not torch.equal(ema, before["conv_out.weight"])
    predicate = train(tiny_model(), data, tiny_cfg(), 1, report_every=0,
                           trainable=lambda n: n.startswith("time."))
    assert predicate.trainable == ["time.0.weight", "time.0.bias", "time.2.weight",
                                   "time.2.bias"]
    with pytest.raises(ValueError, match="1 names are not parameters of the model"):
        train(tiny_model(), data, tiny_cfg(), 1, trainable=["conv_out.weight", "nope"])
    with pytest.raises(ValueError, match="selects no parameter"):
        train(tiny_model(), data, tiny_cfg(), 1, trainable=lambda n: False)


def test_guidance_dropout_replaces_masks_by_the_empty_mask():
    data = blocky_data(16, NUM_CLASSES)

    def empties(uncond_p, seed=0):
        recorder = Recorder(tiny_model())
        train(recorder, data, tiny_cfg(batch_size=8, uncond_p=uncond_p), 6, seed=seed,
                   trainable=lambda n: True, report_every=0)
        masks = torch.cat([c["mask"] for c in recorder.calls])
        empty = (masks[:, -1] == 1).flatten(1).all(1)
        per_pixel = masks.sum(1)        # one-hot, or all zero on unlabeled pixels
        assert ((per_pixel == 1) | (per_pixel == 0)).all() and (per_pixel == 1).any()
        return empty

    assert not empties(0.0).any() and empties(1.0).all()
    half = empties(0.5)
    assert 0.25 < half.float().mean() < 0.75
    assert torch.equal(half, empties(0.5)) and not torch.equal(half, empties(0.5, seed=1))


def test_images_and_low_res_are_resized_for_the_model():
    recorder = Recorder(tiny_model(super_res=True))
    train(recorder, blocky_data(8, NUM_CLASSES, size=16), tiny_cfg(
        image_size=8, low_res_size=4, schedule="linear", uncond_p=0.0), 2,
        trainable=lambda n: True, report_every=0)
    assert recorder.calls[0]["x"] == (4, 3, 8, 8) and recorder.calls[0]["low_res"] == (4, 3, 4, 4)
    assert recorder.calls[0]["mask"].shape == (4, NUM_CLASSES + 1, 16, 16)   # masks stay


def test_resume_reproduces_the_next_steps_exactly_and_reports(tmp_path):
    torch.set_num_threads(1)
    data = blocky_data(12, NUM_CLASSES)
    cfg = tiny_cfg()
    reports, evals = [], []

    def evaluate(ema_model, step):
        evals.append((step, ema_model.training))
        return {"score": float(step)}

    # dropout in the model: its masks must repeat on resume too
    straight = train(tiny_model(dropout=0.3), data, cfg, 4, seed=3,
                          trainable=lambda n: True, on_report=reports.append, report_every=2,
                          evaluate_fn=evaluate, eval_every=3, checkpoint_dir=tmp_path / "a",
                          checkpoint_every=3)
    assert [r["iteration"] for r in reports] == [2, 3, 4] and evals == [(3, False), (4, False)]
    assert reports[1]["score"] == 3.0 and {"loss", "mse", "vb", "lr"} <= set(reports[0])
    assert "checkpoint" not in reports[0] and reports[1]["checkpoint"].endswith("latest.pt")
    shutil.rmtree(tmp_path / "a")

    half = train(tiny_model(dropout=0.3), data, cfg, 2, seed=3, trainable=lambda n: True,
                      checkpoint_dir=tmp_path / "b")
    assert half.step == 2
    resumed = train(tiny_model(seed=9, dropout=0.3), data, cfg, 4, seed=3,
                         trainable=lambda n: True, resume=tmp_path / "b" / "latest.pt")
    assert resumed.step == 4 and [r["iteration"] for r in resumed.history] == [2, 4]
    for name, value in params_of(straight.model).items():
        assert torch.equal(value, params_of(resumed.model)[name]), name
        assert torch.equal(straight.ema[name], resumed.ema[name]), name
    moments = [s["exp_avg_sq"] for s in resumed.optimizer.state_dict()["state"].values()]
    expected = [s["exp_avg_sq"] for s in straight.optimizer.state_dict()["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(moments, expected, strict=True))
    with pytest.raises(ValueError, match="resume needs the same `trainable` set"):
        train(tiny_model(), data, cfg, 4, trainable=["conv_out.weight"],
                   resume=tmp_path / "b" / "latest.pt")


def test_runs_follow_the_seed_not_the_callers_rng():
    data = blocky_data(8, NUM_CLASSES)

    def weights(prior_seed, seed=0):
        model = tiny_model(dropout=0.3)
        torch.manual_seed(prior_seed)
        before = torch.get_rng_state()
        train(model, data, tiny_cfg(), 3, seed=seed, trainable=lambda n: True,
                   report_every=0)
        assert torch.equal(torch.get_rng_state(), before)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    first = weights(prior_seed=1)
    assert torch.equal(first, weights(prior_seed=2))
    assert not torch.equal(first, weights(prior_seed=1, seed=1))


class NaNAfter(nn.Module):
    """Outputs NaN from its `after`-th call on."""

    def __init__(self, model: nn.Module, after: int) -> None:
        super().__init__()
        self.model, self.after, self.calls = model, after, 0

    def forward(self, x, t, mask, low_res=None):
        self.calls += 1
        out = self.model(x, t, mask, low_res=low_res)
        return out * float("nan") if self.calls >= self.after else out


def test_non_finite_loss_raises_with_the_iteration_before_updating():
    data = blocky_data(8, NUM_CLASSES)
    model = NaNAfter(tiny_model(), after=3)
    reports = []
    with pytest.raises(FloatingPointError, match="non-finite loss at iteration 3"):
        train(model, data, tiny_cfg(), 5, trainable=lambda n: True, report_every=1,
                   on_report=reports.append)
    assert [r["iteration"] for r in reports] == [1, 2]
    # the failing step left the weights of step 2 (no NaN written into them)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_pretrain_trains_every_parameter_and_needs_guidance_dropout():
    data = blocky_data(8, NUM_CLASSES)
    model = tiny_model()
    state = pretrain(model, data, tiny_cfg(), 1, report_every=0)
    assert state.trainable == [n for n, _ in model.named_parameters()]
    with pytest.raises(ValueError, match="uncond_p is 0"):
        pretrain(tiny_model(), data, tiny_cfg(uncond_p=0.0), 1)
    with pytest.raises(ValueError, match="trains every parameter"):
        pretrain(tiny_model(), data, tiny_cfg(), 1, trainable=["norm.bias"])


def test_cosine_lr_falls_from_lr_to_its_final_share_and_survives_resume(tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_cfg(lr_schedule="cosine", lr_final=0.1)
    assert cfg.lr_at(0, 8) == pytest.approx(1e-3)
    assert cfg.lr_at(4, 8) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))   # half-way: the mean
    assert cfg.lr_at(8, 8) == pytest.approx(1e-4)
    assert tiny_cfg().lr_at(5, 8) == 1e-3                              # constant: PITI's
    data = blocky_data(8, NUM_CLASSES)
    reports = []
    straight = train(tiny_model(), data, cfg, 4, seed=1, trainable=lambda n: True,
                     on_report=reports.append, report_every=1)
    # each report names the rate its step used, and the optimizer really used it
    assert [r["lr"] for r in reports] == pytest.approx([cfg.lr_at(s, 4) for s in range(4)])
    assert straight.optimizer.param_groups[0]["lr"] == pytest.approx(cfg.lr_at(3, 4))
    constant = train(tiny_model(), data, tiny_cfg(), 4, seed=1, trainable=lambda n: True)
    assert any(not torch.equal(a, b) for a, b in zip(params_of(straight.model).values(),
                                                      params_of(constant.model).values()))
    # a run killed half-way (after its step-2 checkpoint) continues the schedule of the
    # whole run on resume, not a fresh one
    class Killed(Exception):
        pass

    def kill_at_2(report):
        if report["iteration"] == 2:
            raise Killed

    with pytest.raises(Killed):
        train(tiny_model(), data, cfg, 4, seed=1, trainable=lambda n: True,
              checkpoint_dir=tmp_path, checkpoint_every=2, on_report=kill_at_2,
              report_every=1)
    resumed = train(tiny_model(seed=4), data, cfg, 4, seed=1, trainable=lambda n: True,
                    resume=tmp_path / "latest.pt")
    for name, value in params_of(straight.model).items():
        assert torch.equal(value, params_of(resumed.model)[name]), name


def test_config_errors_name_the_field(monkeypatch):
    with pytest.raises(ValueError, match=r"PitiTrainConfig.uncond_p: expected in \[0, 1\]"):
        tiny_cfg(uncond_p=1.5)
    with pytest.raises(ValueError, match="PitiTrainConfig.schedule"):
        tiny_cfg(schedule="cosine")
    with pytest.raises(ValueError, match="PitiTrainConfig.lr_schedule: expected one of"):
        tiny_cfg(lr_schedule="step")
    with pytest.raises(ValueError, match=r"PitiTrainConfig.lr_final: expected in \[0, 1\]"):
        tiny_cfg(lr_final=2.0)
    with pytest.raises(ValueError, match=r"PitiTrainConfig.image_size: \(height, width\)"):
        tiny_cfg(image_size=(8, 0))
    from cat_models.data import batching
    monkeypatch.setattr(batching, "world", lambda: (0, 2))   # as under 2 DDP ranks
    with pytest.raises(ValueError, match="batch_size 3 must divide by the world size 2"):
        train(tiny_model(), blocky_data(4, NUM_CLASSES), tiny_cfg(batch_size=3), 1,
              trainable=lambda n: True)


def _ddp_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        reports = []
        state = train(tiny_model(), blocky_data(12, NUM_CLASSES), tiny_cfg(), 2, seed=5,
                           trainable=lambda n: n != "norm.weight", on_report=reports.append,
                           report_every=1)
        torch.save({"params": params_of(state.model), "ema": state.ema, "reports": reports,
                    "grads": {n: p.grad.clone() for n, p in state.model.named_parameters()
                              if p.grad is not None}}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_single_process(tmp_path):
    """Global batch 4 split 2 + 2: gradients, parameters, EMA and the reported (global)
    losses after 2 steps match one process on the whole batch."""
    torch.set_num_threads(1)
    mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path}/rendezvous", str(tmp_path)), nprocs=2,
             join=True)
    reports = []
    single = train(tiny_model(), blocky_data(12, NUM_CLASSES), tiny_cfg(), 2, seed=5,
                        trainable=lambda n: n != "norm.weight", on_report=reports.append,
                        report_every=1)
    grads = {n: p.grad for n, p in single.model.named_parameters() if p.grad is not None}
    assert "norm.weight" not in grads and len(grads) == 11
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    assert [r["iteration"] for r in rank0["reports"]] == [1, 2]
    for r_ddp, r_single in zip(rank0["reports"], reports, strict=True):
        for key in ("loss", "mse", "vb"):
            assert r_ddp[key] == pytest.approx(r_single[key], rel=1e-5), key
    for rank in (0, 1):
        ddp = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        for name, grad in grads.items():
            torch.testing.assert_close(ddp["grads"][name], grad, rtol=1e-4, atol=1e-6)
        for name, value in params_of(single.model).items():
            torch.testing.assert_close(ddp["params"][name], value, rtol=1e-5, atol=1e-6)
        for name, value in single.ema.items():
            torch.testing.assert_close(ddp["ema"][name], value, rtol=1e-5, atol=1e-6)

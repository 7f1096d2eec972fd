"""benchmarks/fidelity_continue.py: the arms' start checkpoints change exactly one thing each."""

from __future__ import annotations

import pytest
import torch

from cat_models.oasis.baselines import build_plan
from cat_models.oasis.train import save_checkpoint, train_oasis
from tests.conftest import load_benchmark_script
from tests.oasis.conftest import random_data, tiny_cfg

CLASSES = 3


@pytest.fixture(scope="module")
def fc():
    return load_benchmark_script("fidelity_continue")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 'pretraining' checkpoint after 3 steps: Adam moments, an EMA apart from G."""
    torch.manual_seed(0)
    cfg = tiny_cfg()
    data = random_data(8, CLASSES)
    plan = build_plan("scratch", None, None, CLASSES, cfg=cfg, seed=0)
    state = train_oasis(plan, data, cfg, 3, seed=0, report_every=0)
    path = save_checkpoint(state, tmp_path_factory.mktemp("pre") / "latest.pt", cfg)
    return cfg, data, path, torch.load(path, map_location="cpu", weights_only=False)


def _lrs(opt_state):
    return {g["lr"] for g in opt_state["param_groups"]}


def test_resume_keeps_everything_and_fresh_all_resets_optimizer_ema_and_lr(fc, pretrained,
                                                                           tmp_path):
    cfg, _, path, before = pretrained
    kept = torch.load(fc.start_checkpoint(path, fc.ARMS["resume"], cfg, CLASSES,
                                          tmp_path / "resume.pt"), weights_only=False)
    assert kept["step"] == before["step"] == 3 and kept["history"] == []
    assert kept["opt_g"]["state"][0]["step"] == before["opt_g"]["state"][0]["step"]
    assert _lrs(kept["opt_g"]) == {cfg.lr_g} and _lrs(kept["opt_d"]) == {cfg.lr_d}
    name = next(iter(kept["EMA"]))
    assert not torch.equal(kept["EMA"][name], kept["G"][name])   # the EMA lags G
    assert torch.equal(kept["EMA"][name], before["EMA"][name])

    trial = cfg.replace(**fc.TRIAL_LR)
    fresh = torch.load(fc.start_checkpoint(path, fc.ARMS["fresh_all"], trial, CLASSES,
                                           tmp_path / "fresh.pt"), weights_only=False)
    assert fresh["opt_g"]["state"] == {} and fresh["opt_d"]["state"] == {}
    assert _lrs(fresh["opt_g"]) == {1e-4} and _lrs(fresh["opt_d"]) == {4e-4}
    assert all(torch.equal(fresh["EMA"][k], fresh["G"][k]) for k in fresh["G"])
    assert all(torch.equal(fresh["G"][k], before["G"][k]) for k in before["G"])
    assert all(torch.equal(fresh["D"][k], before["D"][k]) for k in before["D"])


def test_an_arm_checkpoint_resumes_in_the_training_loop(fc, pretrained, tmp_path):
    cfg, data, path, _ = pretrained
    start = fc.start_checkpoint(path, fc.ARMS["ema_restart"], cfg, CLASSES, tmp_path / "s.pt")
    plan = build_plan("scratch", None, None, CLASSES, cfg=cfg, seed=0)
    state = train_oasis(plan, data, cfg, 5, seed=0, resume=start, report_every=0)
    assert state.step == 5
    assert state.opt_g.state_dict()["state"][0]["step"] == 5   # Adam continued from step 3

"""Faults without Ray: corrupt cache artifacts (a truncated source checkpoint, a half-written
affinity `.npy`, changed content, a stage folder without its completion marker) and a damaged
trial checkpoint are detected and rebuilt or reported with the path, never used; a non-finite
loss stops the training loop at its iteration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import trials
from harness.cache import MARKER, StageRunner, cached_stage, stage_dir


def _build_source_and_affinity(out: Path) -> None:
    torch.save({"w": torch.arange(1000.0)}, out / "source.pt")
    np.save(out / "affinity.npy", np.ones((12, 10)))


def _damage(folder: Path, how: str) -> str:
    if how == "truncated-source":
        data = (folder / "source.pt").read_bytes()
        (folder / "source.pt").write_bytes(data[: len(data) // 2])
        return f"{folder / 'source.pt'}: cached artifact is truncated"
    if how == "half-written-npy":
        data = (folder / "affinity.npy").read_bytes()
        (folder / "affinity.npy").write_bytes(data[:-50])
        return f"{folder / 'affinity.npy'}: cached artifact is half-written"
    if how == "changed-content":
        np.save(folder / "affinity.npy", np.zeros((12, 10)))
        return f"{folder / 'affinity.npy'}: cached artifact has content hash"
    (folder / MARKER).unlink()
    return f"{folder}: no completion marker {MARKER}"


@pytest.mark.parametrize("how", ["truncated-source", "half-written-npy", "changed-content",
                                 "no-marker"])
def test_corrupt_stage_artifact_is_rebuilt_with_one_line_saying_why(tmp_path, how):
    inputs = {"k": 1}
    lines: list[str] = []
    built = cached_stage(tmp_path, "source-model", inputs, _build_source_and_affinity,
                         log=lines.append)
    recorded = json.loads((built.path / MARKER).read_text())["files"]
    assert sorted(recorded) == ["affinity.npy", "source.pt"]
    expected = _damage(built.path, how)

    # the plan sees it too: not cached, one line with the path and the reason
    plan_lines: list[str] = []
    planner = StageRunner(tmp_path, plan_lines.append, plan=True)
    assert planner.stage("source-model", inputs, _build_source_and_affinity) is None
    assert planner.rows == {"source-model": False}
    assert len(plan_lines) == 1 and expected in plan_lines[0], plan_lines

    lines.clear()
    again = cached_stage(tmp_path, "source-model", inputs, _build_source_and_affinity,
                         log=lines.append)
    assert not again.cached
    assert lines[0].startswith("[stage] source-model: rebuilding: ") and expected in lines[0]
    torch.load(again.path / "source.pt")                         # intact again
    assert np.load(again.path / "affinity.npy").sum() == 120
    assert cached_stage(tmp_path, "source-model", inputs, _build_source_and_affinity,
                        log=lines.append).cached


def test_stage_hash_is_the_library_one(tmp_path):
    from cat_models.data.cache import file_hash as library_hash
    from harness.cache import file_hash

    assert file_hash is library_hash
    built = cached_stage(tmp_path, "x", {}, _build_source_and_affinity, log=lambda _: None)
    recorded = json.loads((built.path / MARKER).read_text())["files"]
    assert recorded["source.pt"] == library_hash(built.path / "source.pt")
    assert stage_dir(tmp_path, "x", {}) == built.path


def test_corrupt_trial_checkpoint_on_restore_names_the_path(tmp_path):
    from ray.train import Checkpoint

    from cat_models.errors import CheckpointError

    ckpt = tmp_path / "checkpoint_000001"
    ckpt.mkdir()
    torch.save({"step": 4, "G": torch.zeros(100)}, ckpt / "latest.pt")
    data = (ckpt / "latest.pt").read_bytes()
    (ckpt / "latest.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError) as err:
        trials._restore_dir(Checkpoint.from_directory(str(ckpt)), str(tmp_path / "scratch"))
    message = str(err.value)
    assert message.startswith(f"{ckpt}/latest.pt: trial checkpoint to restore from is damaged")
    assert "\n" not in message


def test_non_finite_loss_stops_training_at_its_iteration():
    from cat_models.oasis import build_plan, preset
    from cat_models.oasis.train import NonFiniteLossError, train_oasis
    from harness import faults

    cfg = preset("bench64", resolution=(32, 32), channels_g=2, channels_d=2, spade_hidden=4,
                 z_dim=2, num_res_blocks=4, batch_size=2)
    data = [{"image": torch.zeros(3, 32, 32), "label": torch.ones(32, 32, dtype=torch.long)}
            for _ in range(4)]
    from cat_models.oasis import train as train_module

    real = train_module.train_step
    try:
        faults.wrap_train_step(3)
        plan = build_plan("scratch", None, None, 2, cfg=cfg, seed=0)
        with pytest.raises(NonFiniteLossError, match=r"^non-finite loss at iteration 3 \("):
            train_oasis(plan, data, cfg, 6)
    finally:
        train_module.train_step = real


# ----------------------------------------------------------------------------- Ray faults

"""Checkpoint loading: every bad file is one CheckpointError naming the file and the cause.

OASIS source / official files are checked with tiny random-init models built here (the shapes
of the real releases are covered in tests/oasis/test_official.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from cat_models.checkpoints import (
    compare_state_dict,
    load_checked,
    load_torch_file,
)
from cat_models.errors import CheckpointError, InputError
from cat_models.oasis import build_discriminator, build_generator, preset
from cat_models.oasis.official import load_official_oasis
from cat_models.oasis.source import check_source, load_source, save_source

NAMES = ["sky", "grass", "tree"]


def _tiny(resolution: int, blocks: int):
    return preset("bench64", resolution=(resolution, resolution), channels_g=2, channels_d=2,
                  spade_hidden=4, z_dim=2, num_res_blocks=blocks)


def _source(tmp_path: Path, resolution: int = 32, blocks: int = 4, name: str = "source.pt"):
    torch.manual_seed(0)
    cfg = _tiny(resolution, blocks)
    g, d = build_generator(cfg, len(NAMES)), build_discriminator(cfg, len(NAMES))
    return save_source(tmp_path / name, cfg, NAMES, g, d, build_generator(cfg, len(NAMES)))


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("damage, expected", [
    ("missing", "source checkpoint not found"),
    ("empty", "source checkpoint is an empty file (an interrupted write?)"),
    ("truncated", ("source checkpoint is truncated or damaged: its zip archive cannot be read "
                   "(PytorchStreamReader failed reading zip archive")),
    ("random", "source checkpoint is not a torch checkpoint (starts with bytes "),
    ("folder_file", "not a cat-oasis-source/1 checkpoint"),
])
def test_unreadable_source_checkpoint_names_the_file(tmp_path, damage, expected):
    path = _source(tmp_path)
    data = path.read_bytes()
    if damage == "missing":
        path.unlink()
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(data[: len(data) * 2 // 3])
    elif damage == "random":
        path.write_bytes(os.urandom(4096))
    elif damage == "folder_file":
        torch.save({"G": {}}, path)
    before = _listing(tmp_path)
    for check in (lambda: check_source(path, 32), lambda: load_source(path, resolution=32)):
        with pytest.raises(CheckpointError) as err:
            check()
        assert str(err.value).startswith(f"{path}: ")
        assert expected in str(err.value)
        assert "\n" not in str(err.value)          # one line, no traceback text
    assert _listing(tmp_path) == before            # the check wrote and removed nothing


def test_source_checkpoint_at_another_resolution_says_both(tmp_path):
    """A 64 px checkpoint in a 32 px study: found before any model is built or trained."""
    path = _source(tmp_path, resolution=64, blocks=5)
    with pytest.raises(CheckpointError) as err:
        check_source(path, resolution=32)
    assert str(err.value) == (
        f"{path}: source checkpoint was trained at 64×64 (generator latent 4×4), the study runs "
        "at 32×32; pretrain a source at that resolution or set the study's resolution to the "
        "checkpoint's")
    with pytest.raises(CheckpointError, match="trained at 64×64"):
        load_source(path, resolution=(32, 32))
    assert check_source(path, resolution=64).resolution == (64, 64)
    assert check_source(path).num_res_blocks == 5         # no resolution given: not compared


def test_source_tensors_that_do_not_fit_its_config_are_named(tmp_path):
    path = _source(tmp_path)
    payload = torch.load(path, weights_only=True)
    payload["D"]["layer_up_last.weight"] = torch.zeros(7, 2, 1, 1)   # 6 classes, not 3
    payload["G"].pop("conv_img.bias")
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as err:
        check_source(path, 32)
    # G is checked first: the missing tensor is reported before D's shape
    assert str(err.value) == (
        f"{path}: does not match the OASIS G of its own config (32×32, 4 blocks, 3 classes): "
        "1 missing from the checkpoint (conv_img.bias)")
    payload["G"]["conv_img.bias"] = torch.zeros(3)
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as err:
        load_source(path)
    shape = list(build_discriminator(_tiny(32, 4), 3).state_dict()["layer_up_last.weight"].shape)
    assert str(err.value).endswith(
        f"OASIS D of its own config (32×32, 4 blocks, 3 classes): 1 tensor(s) of another shape "
        f"(layer_up_last.weight: checkpoint [7, 2, 1, 1] vs model {shape})")


def test_check_source_matches_load_source_on_a_good_file(tmp_path):
    path = _source(tmp_path)
    cfg = check_source(path, 32)
    loaded = load_source(path, resolution=32)
    assert cfg == loaded.cfg and loaded.class_names == NAMES
    saved = torch.load(path, weights_only=True)
    for k, v in saved["EMA"].items():
        assert torch.equal(loaded.ema.state_dict()[k], v), k


def test_official_file_at_a_resolution_its_depth_cannot_run(tmp_path):
    cfg = _tiny(32, 4)
    torch.save(build_generator(cfg, 3).state_dict(), tmp_path / "best_EMA.pth")
    with pytest.raises(CheckpointError) as err:
        load_official_oasis(tmp_path / "best_EMA.pth", resolution=40, z_dim=cfg.z_dim)
    assert str(err.value) == (
        f"{tmp_path / 'best_EMA.pth'}: the checkpoint has 4 residual blocks, so each side of the "
        "resolution must be a multiple of 16 (latent size = resolution / 8); 40×40 is not")
    assert load_official_oasis(tmp_path / "best_EMA.pth", resolution=48,
                               z_dim=cfg.z_dim).cfg.latent_size == (6, 6)


def test_official_file_with_a_wrong_tensor_shape(tmp_path):
    cfg = _tiny(32, 4)
    sd = build_generator(cfg, 3).state_dict()
    sd["body.1.conv_0.weight_orig"] = torch.zeros(1, 1, 3, 3)
    torch.save(sd, tmp_path / "best_G.pth")
    with pytest.raises(CheckpointError, match=r"best_G.pth: does not match the OASIS G its "
                                              r"tensors describe \(4 blocks, 3 classes\): 1 "
                                              r"tensor\(s\) of another shape \(body.1.conv_0"
                                              r".weight_orig: checkpoint \[1, 1, 3, 3\] vs model"):
        load_official_oasis(tmp_path / "best_G.pth", resolution=32, z_dim=cfg.z_dim)
    torch.save([sd], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=r"list.pth: OASIS checkpoint holds a list, "
                                              r"expected a state dict"):
        load_official_oasis(tmp_path / "list.pth", resolution=32)


def test_compare_counts_everything_and_lists_the_first_few():
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(5)])
    state = {f"{i}.weight": torch.zeros(3, 4) for i in range(5)}        # 5 of another shape
    state |= {"extra.a": torch.zeros(1), "extra.b": torch.zeros(1)}    # 2 unexpected
    diff = compare_state_dict(state, model)                            # 5 biases missing
    assert len(diff.mismatched) == 5 and len(diff.missing) == 5 and len(diff.unexpected) == 2
    assert diff.describe() == (
        "5 tensor(s) of another shape (0.weight: checkpoint [3, 4] vs model [4, 4]; 1.weight: "
        "checkpoint [3, 4] vs model [4, 4]; 2.weight: checkpoint [3, 4] vs model [4, 4], … 2 "
        "more); 5 missing from the checkpoint (0.bias, 1.bias, 2.bias, … 2 more); 2 unexpected "
        "(extra.a, extra.b)")
    ignored = compare_state_dict(state, model, ignore=lambda k: k.startswith("extra"))
    assert ignored.unexpected == () and len(ignored.missing) == 5


def test_load_checked_refuses_before_touching_the_module():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"w.pt: does not match a 4->2 linear: 1 tensor\(s\)"
                                              r" of another shape \(weight: checkpoint \[2, 3\]"):
        load_checked(model, {"weight": torch.ones(2, 3), "bias": torch.ones(2)}, "w.pt",
                     "a 4->2 linear")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    load_checked(model, {"weight": torch.ones(2, 4), "bias": torch.ones(2)}, "w.pt", "x")
    assert model.weight.sum().item() == 8


def test_errors_are_input_errors_and_safetensors_are_checked(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, tmp_path / "ok.safetensors")
    assert torch.equal(load_torch_file(tmp_path / "ok.safetensors")["w"], torch.zeros(3))
    (tmp_path / "bad.safetensors").write_bytes(b"\x08" * 64)
    with pytest.raises(InputError, match=r"bad.safetensors: weights is not a readable "
                                         r"safetensors file"):
        load_torch_file(tmp_path / "bad.safetensors", "weights")
    with pytest.raises(ValueError, match=r"is a folder, expected a file"):
        load_torch_file(tmp_path)

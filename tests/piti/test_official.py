"""The released PITI checkpoints load strictly (manifests in tests/fixtures/piti_official)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from cat_models.piti import PitiModel, label_mask, load_official_piti, preset
from cat_models.piti.official import fold_into_onehot, model_from_official_state_dict
from cat_models.piti.palette import colorize
from tests.piti.tiny_models import random_labels

MANIFESTS = Path(__file__).resolve().parents[1] / "fixtures" / "piti_official"
# (file, preset, tensors, values) as published with the manifests.
CHECKPOINTS = [("base_mask", "official_base", 708, 338_015_302),
               ("upsample_mask", "official_upsampler", 722, 351_345_862)]


def manifest(name: str) -> dict[str, list[int]]:
    return json.loads((MANIFESTS / f"{name}.json").read_text())


@torch.no_grad()
def random_state_dict(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Tensors of exactly the manifest's shapes, scaled so activations stay O(1): weights
    ~ N(0, 1/fan_in), norm gains ~ 1 + N(0, 0.1), biases ~ N(0, 0.02)."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in shapes.items():
        t = torch.empty(shape)
        if len(shape) >= 2:
            t.normal_(0, math.prod(shape[1:]) ** -0.5, generator=gen)
        elif name.endswith("weight"):
            t.normal_(1, 0.1, generator=gen)
        else:
            t.normal_(0, 0.02, generator=gen)
        sd[name] = t
    return sd


@pytest.mark.parametrize("name,preset_name,tensors,values", CHECKPOINTS)
def test_our_layout_is_the_manifest(name, preset_name, tensors, values):
    shapes = manifest(name)
    assert len(shapes) == tensors and sum(math.prod(s) for s in shapes.values()) == values
    with torch.device("meta"):
        model = PitiModel(preset(preset_name), rgb_input=True)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == shapes


def save_random_checkpoint(name: str, path: Path) -> None:
    sd = random_state_dict(manifest(name))
    torch.save(sd, path)
    del sd


@pytest.mark.slow   # ~50 s on one shared core: 1.35 GB written and read, two forwards
def test_base_loads_strictly_and_runs_at_64px(tmp_path):
    path = tmp_path / "base_mask.pt"
    save_random_checkpoint("base_mask", path)
    model = load_official_piti(path, fold=False).eval()
    shapes = manifest("base_mask")
    assert model.config.upsampler is False and model.config.resolution == 64
    sd = model.state_dict()
    assert len(sd) == 708 and sum(v.numel() for v in sd.values()) == 338_015_302
    saved = torch.load(path, weights_only=True)
    assert all(torch.equal(sd[k], saved[k]) for k in shapes)
    del saved, sd
    labels = random_labels(1, 256, num_classes=182, seed=0)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([500])
    with torch.no_grad():
        rgb_out = model(x, t, colorize(labels, 182))
        fold_into_onehot(model)
        assert model.encoder.cnn.conv1.weight.shape == (32, 184, 7, 7)
        out = model(x, t, label_mask(labels, 182))
    assert out.shape == (1, 6, 64, 64) and torch.isfinite(out).all() and out.std() > 0.01
    # The folded one-hot model is the official RGB model, at full scale.
    torch.testing.assert_close(out, rgb_out, atol=1e-4, rtol=1e-4)


def test_upsampler_loads_strictly(tmp_path):
    path = tmp_path / "upsample_mask.pt"
    save_random_checkpoint("upsample_mask", path)
    model = load_official_piti(path)
    cfg = model.config
    assert cfg.upsampler and (cfg.resolution, cfg.low_resolution) == (256, 64)
    assert cfg.in_channels == 6 and cfg.num_classes == 182
    sd = model.state_dict()
    # The fold changes conv1's shape, never the tensor count.
    assert len(sd) == 722 and sd["encoder.cnn.conv1.weight"].shape == (32, 184, 7, 7)
    assert sum(v.numel() for k, v in sd.items() if k != "encoder.cnn.conv1.weight") == (
        351_345_862 - 32 * 3 * 7 * 7)


def meta_state_dict(name: str) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, device="meta") for k, s in manifest(name).items()}


def test_mismatches_name_the_first_bad_tensor():
    sd = meta_state_dict("base_mask")
    del sd["decoder.middle_block.1.encoder_kv.weight"]
    with pytest.raises(ValueError, match=r"base\.pt: .*1 missing tensors \(first: "
                                         r"'decoder\.middle_block\.1\.encoder_kv\.weight'\)"):
        model_from_official_state_dict(sd, source="base.pt")
    sd = meta_state_dict("base_mask")
    sd["decoder.extra.weight"] = torch.empty(3, device="meta")
    with pytest.raises(ValueError, match=r"unexpected tensors \(first: 'decoder\.extra\.weight'"):
        model_from_official_state_dict(sd, source="base.pt")
    sd = meta_state_dict("base_mask")
    sd["encoder.positional_embedding"] = torch.empty(1, 65, 512, device="meta")
    with pytest.raises(ValueError, match=r"'encoder\.positional_embedding' is \[1, 65, 512\] "
                                         r"in the file, \[1, 257, 512\] in the model"):
        model_from_official_state_dict(sd, source="base.pt")


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_official_piti(tmp_path / "nope.pt")
    bad = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(ValueError, match=r"other\.pt: not a PITI state dict"):
        load_official_piti(bad)

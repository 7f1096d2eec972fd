"""Official OASIS checkpoints load by name: manifests of the released state dicts
(tests/fixtures/oasis_official/README.md says where they come from)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cat_models.errors import CheckpointError
from cat_models.oasis import OasisDiscriminator, OasisGenerator, load_official_oasis
from cat_models.oasis.official import model_from_state_dict
from tests.oasis.conftest import one_hot

MANIFESTS = Path(__file__).resolve().parents[1] / "fixtures" / "oasis_official"


def random_state_dict(manifest: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for name, shape in manifest.items():
        if name.endswith("num_batches_tracked"):
            sd[name] = torch.tensor(7)
        elif name.endswith("running_var"):
            sd[name] = torch.rand(shape, generator=gen) + 0.5
        else:
            sd[name] = torch.randn(shape, generator=gen) * 0.02
    return sd


@pytest.mark.parametrize("dataset,classes,res", [
    ("ade20k", 150, (64, 64)), ("coco", 182, (64, 64)), ("cityscapes", 34, (64, 128))])
def test_official_manifests_load_strictly_and_run(dataset, classes, res):
    torch.set_num_threads(1)
    for part in ("G", "D"):
        manifest = json.loads((MANIFESTS / f"{dataset}_{part}.json").read_text())
        sd = random_state_dict(manifest)
        # train mode: the spectral-norm power iteration makes the random u/v consistent
        model = model_from_state_dict(sd, resolution=res).train()
        own = model.state_dict()
        assert set(own) == set(manifest)
        assert all(list(own[k].shape) == manifest[k] for k in manifest)
        key = "fc.weight" if part == "G" else "layer_up_last.weight"
        assert torch.equal(own[key], sd[key])
        with torch.no_grad():
            if part == "G":
                assert isinstance(model, OasisGenerator) and model.semantic_nc == classes + 1
                labels = one_hot(torch.randint(0, classes + 1, (2, *res)), classes)
                out = model(labels)
                assert out.shape == (2, 3, *res) and torch.isfinite(out).all()
            else:
                assert isinstance(model, OasisDiscriminator)
                out = model(torch.randn(1, 3, *res))
                assert out.shape == (1, classes + 2, *res) and torch.isfinite(out).all()


def test_load_official_file_round_trip_and_errors(tmp_path, source_models):
    cfg, g, _ = source_models
    with torch.no_grad():
        g(one_hot(torch.randint(0, 6, (2, 32, 32)), 5))   # move BN buffers / u, v off init
    path = tmp_path / "best_EMA.pth"
    torch.save({f"module.{k}": v for k, v in g.state_dict().items()}, path)
    loaded = load_official_oasis(path, resolution=32, z_dim=cfg.z_dim)
    assert loaded.cfg.channels_g == cfg.channels_g and loaded.cfg.spade_hidden == 8
    for k, v in g.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    labels = one_hot(torch.randint(0, 6, (1, 32, 32)), 5)
    z = torch.randn(1, cfg.z_dim)
    assert torch.allclose(loaded.eval()(labels, z), g.eval()(labels, z))
    torch.save({"something": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="bad.pth.*neither"):
        load_official_oasis(tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="missing.pth: OASIS checkpoint not found"):
        load_official_oasis(tmp_path / "missing.pth")
    bad = dict(g.state_dict())
    bad.pop("conv_img.bias")
    torch.save(bad, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"1 missing from the checkpoint \(conv_img.bias\)"):
        load_official_oasis(tmp_path / "partial.pth", resolution=32, z_dim=cfg.z_dim)

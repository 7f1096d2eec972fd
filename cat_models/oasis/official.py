"""Load the released `boschresearch/OASIS` checkpoints by name (facts: docs/oasis.md).

`best_G.pth` / `best_EMA.pth` / `best_D.pth` are plain state dicts with old-style spectral-norm
keys (`weight_orig`, `weight_u`, `weight_v`) and batch-norm buffers; our modules use the same
hook-based spectral norm and buffer names, so they load with `strict=True`. The architecture
(widths, depth, class count, SPADE hidden size) is read from the tensors; the resolution is not
stored in the files and must be given (ADE20K / COCO-Stuff 256×256, Cityscapes 256×512).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cat_models.oasis.config import OasisConfig
from cat_models.oasis.discriminator import OasisDiscriminator
from cat_models.oasis.generator import OasisGenerator

StateDict = dict[str, torch.Tensor]


def _count(sd: StateDict, prefix: str) -> int:
    return len({k.split(".")[1] for k in sd if k.startswith(prefix + ".")})


def _weight(sd: StateDict, name: str) -> torch.Tensor:
    return sd[name + ".weight_orig"] if name + ".weight_orig" in sd else sd[name + ".weight"]


def config_from_state_dict(sd: StateDict, resolution: tuple[int, int] | int = (256, 256),
                           z_dim: int = 64, base: OasisConfig | None = None
                           ) -> tuple[OasisConfig, int, str]:
    """(config, semantic_nc, "G" | "D") inferred from an OASIS generator/discriminator dict."""
    base = base or OasisConfig()
    spectral = any(k.endswith("weight_orig") for k in sd)
    if "fc.weight" in sd:
        n = _count(sd, "body")
        cfg = base.replace(resolution=resolution, z_dim=z_dim, num_res_blocks=n,
                           channels_g=sd["conv_img.weight"].shape[1],
                           spade_hidden=sd["body.0.norm_0.mlp_shared.0.weight"].shape[0],
                           spade_ks=sd["body.0.norm_0.mlp_shared.0.weight"].shape[-1],
                           param_free_norm="batch" if any("running_mean" in k for k in sd)
                           else "instance", spectral_norm=spectral)
        return cfg, sd["fc.weight"].shape[1] - z_dim, "G"
    if "layer_up_last.weight" in sd:
        n = _count(sd, "body_down")
        cfg = base.replace(resolution=resolution, num_res_blocks=n, spectral_norm=spectral,
                           channels_d=sd["layer_up_last.weight"].shape[1])
        if _weight(sd, "body_down.0.conv1.0").shape[0] != 2 * cfg.channels_d:
            raise ValueError("OASIS D state dict: body_down.0 width "
                             f"{_weight(sd, 'body_down.0.conv1.0').shape[0]} is not twice the "
                             f"last-layer width {cfg.channels_d}; not an OASIS U-Net layout")
        return cfg, sd["layer_up_last.weight"].shape[0] - 1, "D"
    raise ValueError("not an OASIS state dict: neither 'fc.weight' (generator) nor "
                     "'layer_up_last.weight' (discriminator) is present")


def model_from_state_dict(sd: StateDict, resolution: tuple[int, int] | int = (256, 256),
                          z_dim: int = 64, base: OasisConfig | None = None,
                          source: str = "state dict") -> nn.Module:
    try:
        cfg, semantic_nc, kind = config_from_state_dict(sd, resolution, z_dim, base)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err
    model = (OasisGenerator(cfg, semantic_nc) if kind == "G"
             else OasisDiscriminator(cfg, semantic_nc))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{source}: does not match the OASIS {kind} layout; missing keys "
                         f"{missing[:5]}{'…' if len(missing) > 5 else ''}, unexpected keys "
                         f"{unexpected[:5]}{'…' if len(unexpected) > 5 else ''}")
    return model


def load_official_oasis(path: str | Path, resolution: tuple[int, int] | int = (256, 256),
                        z_dim: int = 64, base: OasisConfig | None = None,
                        map_location: str | torch.device = "cpu") -> nn.Module:
    """An `OasisGenerator` (from best_G / best_EMA) or `OasisDiscriminator` (best_D) file.

    `base` supplies the training hyper-parameters (e.g. `preset("official_cityscapes")`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: OASIS checkpoint not found (expected e.g. "
                                "oasis_ade20k_pretrained/models/best_EMA.pth)")
    sd = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(sd, dict):
        raise TypeError(f"{path}: expected a state dict, found {type(sd).__name__}")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return model_from_state_dict(sd, resolution, z_dim, base, source=str(path))


def load_official_folder(folder: str | Path, which: str = "best",
                         resolution: tuple[int, int] | int = (256, 256),
                         base: OasisConfig | None = None
                         ) -> tuple[OasisGenerator, OasisDiscriminator]:
    """(EMA generator, D) from a released `oasis_*_pretrained` folder (or its `models/`)."""
    folder = Path(folder)
    models = folder / "models" if (folder / "models").is_dir() else folder
    g_path = models / f"{which}_EMA.pth"
    if not g_path.is_file():
        g_path = models / f"{which}_G.pth"
    g = load_official_oasis(g_path, resolution, base=base)
    d = load_official_oasis(models / f"{which}_D.pth", resolution, base=base)
    return g, d

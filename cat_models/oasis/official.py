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

from cat_models.checkpoints import as_state_dict, load_checked, load_torch_file
from cat_models.errors import CheckpointError
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
    except KeyError as err:   # a layout key the inference reads is absent
        raise CheckpointError(f"{source}: not an OASIS state dict (no tensor {err})") from None
    except ValueError as err:
        raise CheckpointError(f"{source}: {_depth_hint(sd, resolution) or err}") from None
    model = (OasisGenerator(cfg, semantic_nc) if kind == "G"
             else OasisDiscriminator(cfg, semantic_nc))
    what = (f"the OASIS {kind} its tensors describe ({cfg.num_res_blocks} blocks, "
            f"{semantic_nc - 1} classes)")
    return load_checked(model, sd, source, what)


def _depth_hint(sd: StateDict, resolution: tuple[int, int] | int) -> str:
    """Why a resolution does not fit the file's depth: the generator starts from a latent map
    of resolution / 2**(blocks - 1) and the discriminator halves it `blocks` times."""
    prefix = "body" if "fc.weight" in sd else "body_down"
    blocks = _count(sd, prefix)
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    if not blocks or (h % 2 ** blocks == 0 and w % 2 ** blocks == 0):
        return ""
    return (f"the checkpoint has {blocks} residual blocks, so each side of the resolution must "
            f"be a multiple of {2 ** blocks} (latent size = resolution / {2 ** (blocks - 1)}); "
            f"{h}×{w} is not")


def load_official_oasis(path: str | Path, resolution: tuple[int, int] | int = (256, 256),
                        z_dim: int = 64, base: OasisConfig | None = None,
                        map_location: str | torch.device = "cpu") -> nn.Module:
    """An `OasisGenerator` (from best_G / best_EMA) or `OasisDiscriminator` (best_D) file.

    A missing or unreadable file, a resolution the file's depth cannot run at, or tensors that
    do not fit the layout they imply raise `CheckpointError` naming the file. `base` supplies
    the training hyper-parameters (e.g. `preset("official_cityscapes")`).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: OASIS checkpoint not found (expected e.g. "
                              "oasis_ade20k_pretrained/models/best_EMA.pth)")
    sd = as_state_dict(load_torch_file(path, "OASIS checkpoint", map_location=map_location),
                       str(path), "OASIS checkpoint")
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

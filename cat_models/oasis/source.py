"""Source-model checkpoints: what pretraining writes and transfer reads.

A source checkpoint is one `.pt` file: {"format": "cat-oasis-source/1", "config",
"class_names", "G", "D", "EMA"} (state dicts). `load_source` also accepts the official OASIS
release folder (`oasis_*_pretrained`), so the same transfer code runs from real weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cat_models.checkpoints import (
    as_state_dict,
    compare_state_dict,
    load_torch_file,
    require_match,
)
from cat_models.errors import CheckpointError
from cat_models.oasis.config import OasisConfig
from cat_models.oasis.discriminator import OasisDiscriminator
from cat_models.oasis.generator import OasisGenerator
from cat_models.oasis.official import load_official_folder

FORMAT = "cat-oasis-source/1"


@dataclass
class SourceModel:
    cfg: OasisConfig
    class_names: list[str]
    generator: OasisGenerator       # training weights (what finetuning starts from)
    discriminator: OasisDiscriminator
    ema: OasisGenerator             # EMA weights (what sampling uses)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def save_source(path: str | Path, cfg: OasisConfig, class_names: list[str],
                generator: OasisGenerator, discriminator: OasisDiscriminator,
                ema: OasisGenerator) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, "config": cfg.to_dict(), "class_names": list(class_names),
                "G": generator.state_dict(), "D": discriminator.state_dict(),
                "EMA": ema.state_dict()}, tmp)
    tmp.replace(path)
    return path


def load_source(path: str | Path, class_names: list[str] | None = None,
                resolution: tuple[int, int] | int | None = None, base: OasisConfig | None = None,
                map_location: str = "cpu") -> SourceModel:
    """A `SourceModel` from our `.pt` file or an official `oasis_*_pretrained` folder.

    For official folders pass `class_names` (the dataset's list; the files hold none) and the
    `resolution` (default 256×256) / `base` preset of the release. For a `.pt` file a given
    `resolution` must be the one it was trained at. Every failure is a `CheckpointError` naming
    the file (`check_source` runs the same checks and keeps no model).
    """
    path = Path(path)
    if path.is_dir():
        g, d = load_official_folder(path, resolution=resolution or (256, 256), base=base)
        names = class_names or [f"class_{k}" for k in range(1, g.semantic_nc)]
        if len(names) != g.semantic_nc - 1:
            raise CheckpointError(f"{path}: generator has {g.semantic_nc - 1} classes but "
                                  f"class_names has {len(names)}")
        return SourceModel(g.cfg, names, g, d, g)
    cfg, names, payload = _read_source(path, resolution, map_location)
    models = _build_checked(path, cfg, names, payload, load=True)
    return SourceModel(cfg, names, models["G"], models["D"], models["EMA"].eval())


def check_source(path: str | Path, resolution: tuple[int, int] | int | None = None,
                 class_names: list[str] | None = None) -> OasisConfig:
    """The checks of `load_source` (file, format, resolution, every tensor's name and shape),
    keeping no model. (Models built on the meta device would allocate nothing, but spectral
    norm's first meta call costs ~6 s here, more than building a bench-sized model on CPU.)"""
    path = Path(path)
    if path.is_dir():
        return load_source(path, class_names, resolution).cfg
    cfg, names, payload = _read_source(path, resolution, "cpu")
    _build_checked(path, cfg, names, payload, load=False)
    return cfg


def _read_source(path: Path, resolution: tuple[int, int] | int | None, map_location: str
                 ) -> tuple[OasisConfig, list[str], dict]:
    payload = load_torch_file(path, "source checkpoint", map_location=map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint (written by "
                              "`python -m cat_models.oasis.pretrain`); for official OASIS files "
                              "pass the release folder")
    try:
        cfg = OasisConfig.from_dict(payload["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its OASIS config is not valid here ({err})") from None
    if resolution is not None:
        want = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        if tuple(want) != cfg.resolution:
            (h, w), (lh, lw) = cfg.resolution, cfg.latent_size
            raise CheckpointError(
                f"{path}: source checkpoint was trained at {h}×{w} (generator latent {lh}×{lw}),"
                f" the study runs at {want[0]}×{want[1]}; pretrain a source at that resolution "
                "or set the study's resolution to the checkpoint's")
    return cfg, list(payload["class_names"]), payload


def _build_checked(path: Path, cfg: OasisConfig, names: list[str], payload: dict,
                   load: bool) -> dict[str, torch.nn.Module]:
    """G, D, EMA of `cfg` with the payload's tensors checked (and loaded if `load`)."""
    models = {}
    for key, cls in (("G", OasisGenerator), ("D", OasisDiscriminator), ("EMA", OasisGenerator)):
        models[key] = cls(cfg, len(names) + 1)
        state = as_state_dict(payload.get(key), str(path), f"'{key}' of the source checkpoint")
        require_match(compare_state_dict(state, models[key]), str(path),
                      f"the OASIS {key} of its own config ({cfg.resolution[0]}×"
                      f"{cfg.resolution[1]}, {cfg.num_res_blocks} blocks, {len(names)} classes)")
        if load:
            models[key].load_state_dict(state)
    return models

"""Source-model checkpoints: what pretraining writes and transfer reads.

A source checkpoint is one `.pt` file: {"format": "cat-oasis-source/1", "config",
"class_names", "G", "D", "EMA"} (state dicts). `load_source` also accepts the official OASIS
release folder (`oasis_*_pretrained`), so the same transfer code runs from real weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

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
                resolution: tuple[int, int] | int = (256, 256), base: OasisConfig | None = None,
                map_location: str = "cpu") -> SourceModel:
    """A `SourceModel` from our `.pt` file or an official `oasis_*_pretrained` folder.

    For official folders pass `class_names` (the dataset's list; the files hold none) and the
    `resolution` / `base` preset of the release.
    """
    path = Path(path)
    if path.is_dir():
        g, d = load_official_folder(path, resolution=resolution, base=base)
        names = class_names or [f"class_{k}" for k in range(1, g.semantic_nc)]
        if len(names) != g.semantic_nc - 1:
            raise ValueError(f"{path}: generator has {g.semantic_nc - 1} classes but "
                             f"class_names has {len(names)}")
        return SourceModel(g.cfg, names, g, d, g)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: source checkpoint not found")
    payload = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} checkpoint (written by "
                         "`python -m cat_models.oasis.pretrain`); for official OASIS files "
                         "pass the release folder")
    cfg = OasisConfig.from_dict(payload["config"])
    names = list(payload["class_names"])
    models = {}
    for key, cls in (("G", OasisGenerator), ("D", OasisDiscriminator), ("EMA", OasisGenerator)):
        models[key] = cls(cfg, len(names) + 1)
        models[key].load_state_dict(payload[key])
    return SourceModel(cfg, names, models["G"], models["D"], models["EMA"].eval())

"""Load the released PITI mask-to-image checkpoints (PITI-Synthesis/PITI, commit d9f7481).

`base_mask.pt` (64×64 base, 708 tensors, 338 M values) and `upsample_mask.pt` (64 -> 256
upsampler, 722 tensors) are plain state dicts with an `encoder.` and a `decoder.` part, trained
on COCO-Stuff (182 classes) with colour-coded masks. They load with strict keys into
`PitiModel(preset("official_base" | "official_upsampler"), rgb_input=True)`; then the palette
is folded into `encoder.cnn.conv1` (see `palette`), giving a model that takes one-hot masks.
Which of the two a file is comes from its first conv (3 or 6 input channels); the image
resolution is not stored in the files and is the preset's (64 / 256).
"""

from __future__ import annotations

from pathlib import Path

import torch

from cat_models.piti.config import PitiConfig, preset
from cat_models.piti.model import PitiModel
from cat_models.piti.palette import fold_palette

StateDict = dict[str, torch.Tensor]
FIRST_CONV = "decoder.input_blocks.0.0.weight"
COCO_CLASSES = 182   # official ids 0..181 (255 = unlabeled)


def official_config(sd: StateDict, source: str = "state dict") -> PitiConfig:
    """The official preset a state dict belongs to (base or upsampler)."""
    if FIRST_CONV not in sd:
        raise ValueError(f"{source}: not a PITI state dict (no {FIRST_CONV!r}; expected the "
                         "`encoder.*` / `decoder.*` tensors of base_mask.pt or upsample_mask.pt)")
    channels = sd[FIRST_CONV].shape[1]
    if channels not in (3, 6):
        raise ValueError(f"{source}: {FIRST_CONV} has {channels} input channels; expected 3 "
                         "(base) or 6 (upsampler)")
    return preset("official_upsampler" if channels == 6 else "official_base")


def check_state_dict(sd: StateDict, model: torch.nn.Module, source: str) -> None:
    """Raise naming the first missing, unexpected or mismatching tensor (strict keys)."""
    ours = model.state_dict()
    missing = [k for k in ours if k not in sd]
    unexpected = [k for k in sd if k not in ours]
    wrong = [k for k in ours if k in sd and tuple(sd[k].shape) != tuple(ours[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensors (first: {missing[0]!r})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (first: {unexpected[0]!r})")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} shape mismatches (first: {k!r} is "
                        f"{list(sd[k].shape)} in the file, {list(ours[k].shape)} in the model)")
    if problems:
        raise ValueError(f"{source}: does not match the PITI layout: " + "; ".join(problems))


def model_from_official_state_dict(sd: StateDict, config: PitiConfig | None = None,
                                   num_classes: int = COCO_CLASSES, fold: bool = True,
                                   source: str = "state dict") -> PitiModel:
    """Strict load into an RGB-input model, then (by default) fold the palette of
    `num_classes` classes into conv1 so the model takes one-hot masks."""
    cfg = (config or official_config(sd, source)).replace(num_classes=num_classes,
                                                          prompt_count=0)
    # Built on the meta device and filled by assignment: no 338 M-value random init, and
    # the file's tensors become the parameters without a copy.
    with torch.device("meta"):
        model = PitiModel(cfg, rgb_input=True)
    check_state_dict(sd, model, source)
    model.load_state_dict(sd, strict=True, assign=True)
    if fold:
        fold_into_onehot(model)
    return model


def fold_into_onehot(model: PitiModel) -> PitiModel:
    """Turn an RGB-input model into a one-hot one in place (exact, see `palette`)."""
    if not model.encoder.rgb_input:
        raise ValueError("fold_into_onehot: the model already takes one-hot masks")
    cnn = model.encoder.cnn
    cnn.conv1 = fold_palette(cnn.conv1, model.config.num_classes)
    model.encoder.rgb_input = False
    return model


def load_official_piti(path: str | Path, config: PitiConfig | None = None,
                       num_classes: int = COCO_CLASSES, fold: bool = True,
                       map_location: str | torch.device = "cpu") -> PitiModel:
    """A `PitiModel` from `base_mask.pt` or `upsample_mask.pt` (kind read from the file).

    `config` overrides the official preset (it must describe the file's architecture);
    `fold=False` keeps the official RGB input (a colour-coded mask, see `palette.colorize`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: PITI checkpoint not found (expected base_mask.pt or "
                                "upsample_mask.pt from the PITI release)")
    sd = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(sd, dict):
        raise TypeError(f"{path}: expected a state dict, found {type(sd).__name__}")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return model_from_official_state_dict(sd, config, num_classes, fold, source=str(path))

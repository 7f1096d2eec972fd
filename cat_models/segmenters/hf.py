"""HFSegmenter: a transformers semantic-segmentation model loaded from a local path.

mmsegmentation does not build against current torch (mmseg 1.2.2 imports compiled `mmcv.ops`;
`mmcv-lite` has none; `mmcv` 2.1.0 fails to build against torch 2.14), so published evaluators are
used through transformers (`AutoModelForSemanticSegmentation`: UperNet, SegFormer, DPT, ...;
`AutoModelForUniversalSegmentation`: Mask2Former / MaskFormer). Nothing is downloaded: the path
must hold `config.json` + weights (`save_pretrained` output or an HF-cache snapshot directory).

Class k of the model (`config.id2label[k]`) is our label k + 1, which matches the ADE20K
convention (HF id 0 = "wall" = ADE label 1). Inputs [-1, 1] are mapped to [0, 1], resized to
`input_size` (if given) and normalised with the model's image-processor mean/std; logits come
back bilinearly resized to the input size.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from cat_models.checkpoints import load_transformers_checked
from cat_models.segmenters.base import SegmenterError, check_images, predict_from_logits

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _normalisation(path: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """mean/std of the checkpoint's image processor if it ships one, else ImageNet's."""
    if not (path / "preprocessor_config.json").is_file():
        return IMAGENET_MEAN, IMAGENET_STD
    import json

    cfg = json.loads((path / "preprocessor_config.json").read_text())
    return tuple(cfg.get("image_mean", IMAGENET_MEAN)), tuple(cfg.get("image_std", IMAGENET_STD))


class HFSegmenter:
    """`Segmenter` over a transformers model (semantic or universal segmentation head)."""

    def __init__(self, model: torch.nn.Module, class_names: list[str], source: str,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                 input_size: int | tuple[int, int] | None = None) -> None:
        self.model = model.eval()
        self.class_names = list(class_names)
        self.source = source
        self.input_size = (input_size, input_size) if isinstance(input_size, int) else input_size
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    @classmethod
    def from_pretrained_path(cls, path: str | Path, class_names: list[str] | None = None,
                             input_size: int | tuple[int, int] | None = None,
                             device: str | torch.device = "cpu") -> HFSegmenter:
        """Load a local transformers checkpoint; `class_names` overrides `config.id2label`.

        Weights that are unreadable, missing or of other shapes than `config.json` describes
        raise `CheckpointError` (transformers would re-initialise missing ones silently).
        """
        from transformers import (
            AutoConfig,
            AutoModelForSemanticSegmentation,
            AutoModelForUniversalSegmentation,
        )

        path = Path(path)
        if not (path / "config.json").is_file():
            raise SegmenterError(f"{path}: no config.json; expected a transformers checkpoint "
                                 "directory (save_pretrained output or HF-cache snapshot)")
        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as err:   # bad JSON, unknown model_type
            raise SegmenterError(f"{path}: config.json cannot be used "
                                 f"({str(err).strip().splitlines()[0][:200]})") from None
        universal = config.model_type in {"mask2former", "maskformer", "oneformer"}
        auto = AutoModelForUniversalSegmentation if universal else AutoModelForSemanticSegmentation
        # weights that do not fit config.json fail here, naming the first differing tensors
        model = load_transformers_checked(auto, path, "a segmentation model")
        names = [config.id2label[i] for i in range(len(config.id2label))]
        if class_names is not None:
            if len(class_names) != len(names):
                raise SegmenterError(f"{path}: class_names has {len(class_names)} names, the "
                                     f"model predicts {len(names)} classes")
            names = list(class_names)
        mean, std = _normalisation(path)
        return cls(model.to(device), names, f"hf-{config.model_type}:{path.name}", mean, std,
                   input_size)

    @property
    def identifier(self) -> str:
        return self.source

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, "HFSegmenter.logits")
        size = images.shape[-2:]
        x = (images.to(self.device, torch.float32) + 1) / 2
        if self.input_size is not None and tuple(x.shape[-2:]) != tuple(self.input_size):
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        x = (x - self._mean.to(x.device)) / self._std.to(x.device)
        out = self.model(pixel_values=x)
        if hasattr(out, "class_queries_logits"):
            # Mask2Former / MaskFormer: per-pixel class scores = sum over queries of
            # p(class | query) * p(pixel in mask | query), as their semantic post-processing.
            probs = out.class_queries_logits.softmax(-1)[..., :-1]
            masks = out.masks_queries_logits.sigmoid()
            logits = torch.einsum("bqc,bqhw->bchw", probs, masks)
        else:
            logits = out.logits
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits.float().to(images.device)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return predict_from_logits(self.logits(images))

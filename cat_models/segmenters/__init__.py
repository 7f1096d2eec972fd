"""Segmentation networks behind one interface (`Segmenter`): mIoU evaluation (paper §4.1) and
segmentation affinity (paper §3.1).

Backends: `SmallSegmenter` (a compact U-Net trained here, `train_small_segmenter`) and
`HFSegmenter` (a transformers checkpoint from a local path). `load_segmenter(path)` opens
either: a file saved by `SmallSegmenter.save`, or a directory with a transformers `config.json`.
"""

from __future__ import annotations

from pathlib import Path

from cat_models.segmenters.base import Segmenter, SegmenterError, predict_from_logits
from cat_models.segmenters.hf import HFSegmenter
from cat_models.segmenters.small import SmallSegmenter, SmallSegmenterConfig
from cat_models.segmenters.train import class_weights, train_small_segmenter


def load_segmenter(path: str | Path, device: str = "cpu") -> Segmenter:
    """A saved `SmallSegmenter` file, or a transformers checkpoint directory."""
    path = Path(path)
    if path.is_dir():
        return HFSegmenter.from_pretrained_path(path, device=device)
    if not path.is_file():
        raise SegmenterError(f"{path}: no such segmenter file or directory")
    return SmallSegmenter.load(path, device=device)


__all__ = [
    "HFSegmenter",
    "Segmenter",
    "SegmenterError",
    "SmallSegmenter",
    "SmallSegmenterConfig",
    "class_weights",
    "load_segmenter",
    "predict_from_logits",
    "train_small_segmenter",
]

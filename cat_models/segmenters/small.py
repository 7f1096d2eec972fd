"""SmallSegmenter: a compact U-Net trained here on the embedded benchmark (or any dataset).

The paper evaluates mIoU with segmenters trained on the *full* target data (paper §4.1, "We use
the same segmentation networks as in [33]"); on the embedded benchmark that network is this one,
trained by `train_small_segmenter` on the full target training split. 30 k parameters at the
default widths (8, 16, 32): 500 iterations of batch 8 take ~40 s on one core and reach
~87% mIoU on the benchmark's real target validation images (wider nets: `SmallSegmenterConfig`).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cat_models.checkpoints import load_checked, load_torch_file
from cat_models.segmenters.base import SegmenterError, check_images, predict_from_logits

FILE_FORMAT = "cat-harness/small-segmenter"
FILE_VERSION = 1


@dataclass(frozen=True)
class SmallSegmenterConfig:
    """Architecture of the U-Net: `widths[i]` channels at 1/2**i resolution."""

    num_classes: int
    widths: tuple[int, ...] = (8, 16, 32)
    dilation: int = 2  # the bottleneck's second conv is dilated: wider context for textures

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise SegmenterError(f"SmallSegmenterConfig.num_classes must be >= 1, "
                                 f"got {self.num_classes}")
        if len(self.widths) < 2:
            raise SegmenterError(f"SmallSegmenterConfig.widths needs >= 2 levels, "
                                 f"got {self.widths}")


def _conv_block(c_in: int, c_out: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True),
        nn.Conv2d(c_out, c_out, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out), nn.ReLU(True),
    )


class UNet(nn.Module):
    """Encoder (conv blocks + max-pool) / decoder (bilinear up + skip concat); N logits out."""

    def __init__(self, config: SmallSegmenterConfig) -> None:
        super().__init__()
        w = config.widths
        self.down = nn.ModuleList(
            _conv_block(3 if i == 0 else w[i - 1], w[i],
                        config.dilation if i == len(w) - 1 else 1)
            for i in range(len(w)))
        self.up = nn.ModuleList(_conv_block(w[i + 1] + w[i], w[i]) for i in range(len(w) - 1))
        self.head = nn.Conv2d(w[0], config.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.max_pool2d(x, 2, ceil_mode=True)
            x = block(x)
            skips.append(x)
        for i in reversed(range(len(self.up))):
            skip = skips[i]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[i](torch.cat([x, skip], 1))
        out = self.head(x)
        return out if out.shape[-2:] == size else F.interpolate(out, size=size, mode="bilinear")


class SmallSegmenter(nn.Module):
    """`Segmenter` backed by `UNet`; `forward` is the trainable net, `logits` the inference."""

    def __init__(self, config: SmallSegmenterConfig, class_names: list[str]) -> None:
        super().__init__()
        if len(class_names) != config.num_classes:
            raise SegmenterError(f"SmallSegmenter: {len(class_names)} class_names for "
                                 f"num_classes={config.num_classes}")
        self.config = config
        self.class_names = list(class_names)
        self.net = UNet(config)
        self.train_info: dict = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def identifier(self) -> str:
        digest = hashlib.sha1()
        for key, value in sorted(self.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        return f"small-unet:{digest.hexdigest()[:10]}"

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, "SmallSegmenter.logits")
        was_training = self.training
        self.eval()
        try:
            out = self.net(images.to(self.device, torch.float32))
        finally:
            self.train(was_training)
        return out.to(images.device)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return predict_from_logits(self.logits(images))

    def save(self, path: str | Path) -> Path:
        """One file: arch config + class names + state dict (+ how it was trained)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arch = asdict(self.config)
        arch["widths"] = list(arch["widths"])
        torch.save({
            "format": FILE_FORMAT, "version": FILE_VERSION, "arch": arch,
            "class_names": self.class_names, "train_info": self.train_info,
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }, path)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> SmallSegmenter:
        """A `save` file; an unreadable file or tensors that do not fit raise `CheckpointError`."""
        path = Path(path)
        blob = load_torch_file(path, "segmenter file")
        if not isinstance(blob, dict) or blob.get("format") != FILE_FORMAT:
            raise SegmenterError(f"{path}: not a SmallSegmenter file (expected "
                                 f"format={FILE_FORMAT!r})")
        if blob.get("version") != FILE_VERSION:
            raise SegmenterError(f"{path}: SmallSegmenter file version {blob.get('version')}, "
                                 f"this code reads version {FILE_VERSION}")
        arch = dict(blob["arch"])
        arch["widths"] = tuple(arch["widths"])
        seg = cls(SmallSegmenterConfig(**arch), list(blob["class_names"]))
        load_checked(seg, blob["state_dict"], str(path),
                     f"the SmallSegmenter its own header describes (widths {list(arch['widths'])})")
        seg.train_info = dict(blob.get("train_info", {}))
        return seg.to(device).eval()

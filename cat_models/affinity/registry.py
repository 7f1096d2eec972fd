"""Affinity estimators by name (paper §3.1): "text", "segmentation", "features",
"combination", "average", "random".

Every registered estimator is `fn(inputs: AffinityInputs, **options) -> AffinityMatrix`, so a
study can name a method and the harness builds one `AffinityInputs` for all of them. Each
estimator reads only the fields it needs and raises `AffinityError` naming a missing one.
A new method is one decorated function::

    @register_estimator("my_method")
    def my_method(inputs: AffinityInputs, **options) -> AffinityMatrix: ...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from cat_models import registered
from cat_models.affinity.matrix import AffinityError, AffinityMatrix

if TYPE_CHECKING:        # annotations only: naming estimators imports no torch
    import torch


class SegmenterLike(Protocol):
    """What the segmentation estimator needs of a source segmenter (cat_models.segmenters)."""

    class_names: list[str]

    def logits(self, images: torch.Tensor) -> torch.Tensor: ...

    def predict(self, images: torch.Tensor) -> torch.Tensor: ...


@dataclass
class AffinityInputs:
    """Everything any estimator may read; leave unused fields empty.

    `source_dataset` / `target_dataset` are `cat_models.data.SegmentationDataset`s (items with
    "image" in [-1, 1] and "label" 0..N); `matrices` feeds the combinations; `fid_ranking`
    lists method names from lowest to highest training-free FID (paper §3.1, combination).
    """

    source_names: Sequence[str] | None = None
    target_names: Sequence[str] | None = None
    source_dataset: Any = None
    target_dataset: Any = None
    segmenter: SegmenterLike | None = None
    matrices: Mapping[str, AffinityMatrix] = field(default_factory=dict)
    fid_ranking: Sequence[str] | None = None
    seed: int = 0

    def names(self) -> tuple[list[str], list[str]]:
        """(source, target) class names, from the explicit lists or else the datasets."""
        source = self.source_names
        if source is None and self.source_dataset is not None:
            source = self.source_dataset.class_names
        if source is None and self.segmenter is not None:
            source = self.segmenter.class_names
        target = self.target_names
        if target is None and self.target_dataset is not None:
            target = self.target_dataset.class_names
        if source is None or target is None:
            missing = "source_names" if source is None else "target_names"
            raise AffinityError(f"AffinityInputs.{missing}: no class names given (pass the "
                                "names or the dataset)")
        return list(source), list(target)

    def require(self, *fields: str) -> None:
        missing = [f for f in fields if getattr(self, f) in (None, {}, [])]
        if missing:
            raise AffinityError(f"AffinityInputs: {', '.join(missing)} required by this method")


Estimator = Callable[..., AffinityMatrix]
ESTIMATORS: dict[str, Estimator] = {}


def register_estimator(name: str) -> Callable[[Estimator], Estimator]:
    def decorate(fn: Estimator) -> Estimator:
        if name in ESTIMATORS:
            raise AffinityError(f"affinity estimator {name!r} registered twice")
        ESTIMATORS[name] = fn
        return fn
    return decorate


def available_estimators() -> list[str]:
    """Every estimator's name: those registered so far and the built-ins, whose names are read
    from their modules' source until they are imported (the modules import torch)."""
    builtin = {name for module in BUILTIN_MODULES
               for name in registered.decorated(module, register_estimator.__name__)}
    return sorted({*ESTIMATORS, *builtin})


def estimate_affinity(method: str, inputs: AffinityInputs, **options: Any) -> AffinityMatrix:
    """Run the estimator registered as `method` (see `available_estimators()`)."""
    _import_builtin()
    if method not in ESTIMATORS:
        raise AffinityError(f"unknown affinity method {method!r}; expected one of "
                            f"{sorted(ESTIMATORS)}")
    return ESTIMATORS[method](inputs, **options)


# The modules of the built-in estimators; each registers its own on import.
BUILTIN_MODULES = tuple(f"cat_models.affinity.{m}" for m in
                        ("baseline", "combination", "features", "segmentation", "text"))


def _import_builtin() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)

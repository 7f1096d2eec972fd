"""How each reported metric is read and shown: label, better direction, display scale/format.

One registry for tables, curves and the report, so "↓FID" / "↑mIoU" (paper Tables 1–5) are
decided in one place. `result.json` stores mIoU as a fraction in [0, 1]
(`cat_models.metrics.miou`); the paper prints percentages, hence `scale=100`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class MetricSpec:
    name: str                       # column in the results DataFrame
    label: str                      # short header, e.g. "FID"
    direction: Literal["min", "max"]
    scale: float = 1.0              # display value = stored value × scale
    decimals: int = 1
    # column with each trial's own standard deviation of this metric (KID: over its subsets),
    # shown as the ± of a single-seed cell, where there is no spread over seeds
    spread: str | None = None
    # what a table's footnote says of the column, when it is not self-explanatory
    note: str = ""
    # a reference value, not a result (the real-data floor), and the metric it is read against
    # (curves draw it in that metric's panel): never marked best
    reference_for: str | None = None

    @property
    def reference(self) -> bool:
        return self.reference_for is not None

    @property
    def arrow(self) -> str:
        return "↓" if self.direction == "min" else "↑"

    @property
    def header(self) -> str:
        """Paper-style header: arrow then label ("↓FID", "↑mIoU")."""
        return f"{self.arrow}{self.label}"


METRICS: dict[str, MetricSpec] = {}


def register_metric(spec: MetricSpec) -> MetricSpec:
    METRICS[spec.name] = spec
    return spec


register_metric(MetricSpec("fid", "FID", "min"))
# FID of n held-out real images against the same statistics (n = the evaluation's samples):
# the small-n bias every FID in the row carries; FID − floor is the generator's share.
register_metric(MetricSpec(
    "fid_floor", "FID floor", "min", reference_for="fid",
    note="held-out real images at the same sample count against the same statistics (the "
         "bias every FID here carries), a reference, never bold"))
register_metric(MetricSpec("kid", "KID×10³", "min", scale=1000.0, decimals=2,
                           spread="kid_std"))
register_metric(MetricSpec("miou", "mIoU", "max", scale=100.0))
# the evaluation segmenter's mIoU on the real images of the same label maps: what a generator
# reproducing the real images would score (no bound: generated images can score a little above)
register_metric(MetricSpec(
    "miou_real", "mIoU real", "max", scale=100.0, reference_for="miou",
    note="the evaluation segmenter on the real images of the same label maps, a reference, "
         "never bold (generators near it are as faithful to the label maps as real images, as "
         "far as this segmenter can tell; they can score a little above it)"))
register_metric(MetricSpec("best_fid", "best FID", "min"))
register_metric(MetricSpec("best_miou", "best mIoU", "max", scale=100.0))
register_metric(MetricSpec("iters_to_convergence", "# iters", "min", decimals=0))
register_metric(MetricSpec("wall_time_s", "time (s)", "min", decimals=0))


def references_for(metric: str) -> list[MetricSpec]:
    """The reference values registered for `metric` (FID: its floor; mIoU: real images')."""
    return [spec for spec in METRICS.values() if spec.reference_for == metric]


# Per-class IoU: a trial reports `iou/<class>` (the evaluation segmenter on its samples) and
# `iou_real/<class>` (the same segmenter on the real images of the same label maps, the
# reference) at every evaluation, one key per target class, so that the classes a method gains
# or loses (e.g. those a few-shot set never shows) can be read beside the mean.
CLASS_IOU_PREFIX = "iou/"
CLASS_IOU_REAL_PREFIX = "iou_real/"


def class_iou_keys(per_class_iou: dict[str, float], prefix: str = CLASS_IOU_PREFIX
                   ) -> dict[str, float]:
    """{class: IoU} (the evaluator's `per_class_iou` / `per_class_iou_real`) as report keys."""
    return {f"{prefix}{name}": float(v) for name, v in per_class_iou.items()}


def class_iou_columns(columns: Any, prefix: str = CLASS_IOU_PREFIX) -> list[str]:
    """The per-class IoU columns among `columns` (a frame's), in their order."""
    return [c for c in columns if isinstance(c, str) and c.startswith(prefix)]


def metric_spec(name: str) -> MetricSpec:
    """The registered spec; for a per-class IoU key, the class's (labelled by its class name,
    in %, the real images' key a reference); else a neutral one (lower is better, 3
    decimals) for an unknown key."""
    if name in METRICS:
        return METRICS[name]
    if name.startswith(CLASS_IOU_REAL_PREFIX):
        cls = name[len(CLASS_IOU_REAL_PREFIX):]
        return MetricSpec(name, f"{cls} (real)", "max", scale=100.0,
                          reference_for=CLASS_IOU_PREFIX + cls)
    if name.startswith(CLASS_IOU_PREFIX):
        return MetricSpec(name, name[len(CLASS_IOU_PREFIX):], "max", scale=100.0)
    return MetricSpec(name, name, "min", decimals=3)


# Metrics every trial reports during training; the final view prefers `final_<name>`.
EVAL_METRICS = ("fid", "kid", "kid_std", "miou")
# Provenance keys (paper §4.1 protocol): which nets produced the numbers.
PROVENANCE_KEYS = ("fid_feature_net", "miou_segmenter", "source_ckpt_hash")

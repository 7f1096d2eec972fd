"""The class affinity matrix A (paper §3): a C_S × C_T array with its class names and origin.

Column k holds the weights of target class k over the source classes; for every estimator
except "random" before normalisation, columns sum to 1 so that `one_hot_target @ A.T` stays on
the source input scale (paper §3.1). Saved as three files sharing a stem: `<stem>.npy` (the
array), `<stem>.csv` (the array with source names as rows and target names as columns) and
`<stem>.json` (names, method and provenance).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class AffinityError(ValueError):
    """Bad affinity input: the message names the field or file and what is wrong."""


@dataclass(frozen=True)
class AffinityMatrix:
    """`values[l, k]` = affinity of target class k to source class l (paper §3.1, A_{k,l})."""

    values: np.ndarray
    source_names: tuple[str, ...]
    target_names: tuple[str, ...]
    method: str
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "source_names", tuple(self.source_names))
        object.__setattr__(self, "target_names", tuple(self.target_names))
        expected = (len(self.source_names), len(self.target_names))
        if values.shape != expected:
            raise AffinityError(
                f"AffinityMatrix.values: shape {values.shape} does not match "
                f"{expected[0]} source × {expected[1]} target class names"
            )
        if not np.isfinite(values).all():
            raise AffinityError(f"AffinityMatrix.values ({self.method}): contains NaN or inf")

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape  # type: ignore[return-value]

    def argmax_source(self) -> np.ndarray:
        """Index of the highest-affinity source class for each target class, [C_T]."""
        return self.values.argmax(axis=0)

    def without_evidence(self) -> np.ndarray:
        """Boolean [C_T]: target classes this matrix knows nothing of, so that it has no
        counterpart to vote for: those its estimator lists as `absent_target_classes` (the
        few-shot set never shows them: segmentation gives them a uniform column, features a
        zero one), and any column whose entries are all equal (one from a matrix saved
        without provenance, say). Their argmax is source class 0 by position, not a choice."""
        absent = set(self.provenance.get("absent_target_classes") or ())
        flat = np.ptp(self.values, axis=0) <= 1e-12
        return np.asarray([t in absent for t in self.target_names]) | flat

    def top1_agreement(self, truth: dict[str, str | None]) -> tuple[int, int]:
        """(hits, counted): of the target classes `truth` gives a source counterpart (target
        -> source class name, None or absent: no counterpart), how many have their highest
        affinity there."""
        best = self.argmax_source()
        known = [(k, truth.get(t)) for k, t in enumerate(self.target_names)
                 if truth.get(t) is not None]
        return sum(self.source_names[best[k]] == s for k, s in known), len(known)

    def with_values(self, values: np.ndarray, method: str | None = None,
                    **provenance: Any) -> AffinityMatrix:
        """A copy with new values (same names), recording what changed in the provenance."""
        return AffinityMatrix(values, self.source_names, self.target_names,
                              method or self.method, {**self.provenance, **provenance})

    # -- files ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write `<stem>.npy`, `<stem>.csv` and `<stem>.json`; returns the .npy path."""
        npy = Path(path).with_suffix(".npy")
        npy.parent.mkdir(parents=True, exist_ok=True)
        np.save(npy, self.values)
        with npy.with_suffix(".csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["source \\ target", *self.target_names])
            for name, row in zip(self.source_names, self.values):
                writer.writerow([name, *(repr(float(v)) for v in row)])
        meta = {
            "method": self.method,
            "source_names": list(self.source_names),
            "target_names": list(self.target_names),
            "provenance": self.provenance,
        }
        npy.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=str))
        return npy

    @classmethod
    def load(cls, path: str | Path) -> AffinityMatrix:
        """Read what `save` wrote; without the .json sidecar, names come from the CSV."""
        npy = Path(path).with_suffix(".npy")
        if not npy.is_file():
            raise AffinityError(f"{npy}: affinity array file not found")
        values = np.load(npy)
        meta_path = npy.with_suffix(".json")
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            return cls(values, meta["source_names"], meta["target_names"], meta["method"],
                       meta.get("provenance", {}))
        source, target = read_csv_names(npy.with_suffix(".csv"))
        return cls(values, source, target, "unknown", {"loaded_from": str(npy)})


def read_csv_names(path: Path) -> tuple[list[str], list[str]]:
    """(source names, target names) from an affinity CSV written by `AffinityMatrix.save`."""
    if not path.is_file():
        raise AffinityError(f"{path}: neither the .json nor the .csv with class names exists")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or len(rows[0]) < 2:
        raise AffinityError(f"{path}: expected a header row 'source \\ target,<target names>'")
    return [r[0] for r in rows[1:]], rows[0][1:]


def top_matches(affinity: AffinityMatrix, k: int = 3) -> dict[str, list[tuple[str, float]]]:
    """For each target class, its `k` highest-affinity source classes with their weights."""
    if k < 1:
        raise AffinityError(f"top_matches: k must be >= 1, got {k}")
    out: dict[str, list[tuple[str, float]]] = {}
    for j, target in enumerate(affinity.target_names):
        column = affinity.values[:, j]
        # stable sort: equal weights keep source order, so ties are reproducible
        order = np.argsort(-column, kind="stable")[:k]
        out[target] = [(affinity.source_names[i], float(column[i])) for i in order]
    return out


def format_top_matches(affinity: AffinityMatrix, k: int = 3) -> str:
    """Human-readable lines `target -> source (weight), ...` for the CLI and logs."""
    width = max(len(t) for t in affinity.target_names)
    header = (f"{affinity.method} affinity: {len(affinity.source_names)} source × "
              f"{len(affinity.target_names)} target classes")
    lines = [header]
    for target, matches in top_matches(affinity, k).items():
        ranked = ", ".join(f"{name} ({weight:.3f})" for name, weight in matches)
        lines.append(f"  {target:<{width}} -> {ranked}")
    return "\n".join(lines)

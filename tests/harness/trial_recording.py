"""A `report` callable for trial tests (imported by the test modules of this folder)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


class Recorder:
    """A `report` callable that keeps the metrics and copies each checkpoint folder when it is
    reported (run_trial's own folder is scratch space, as Ray copies it at report time)."""

    def __init__(self, keep: Path) -> None:
        self.keep = keep
        self.reports: list[dict[str, Any]] = []
        self.checkpoints: dict[int, Path] = {}

    def __call__(self, metrics: dict[str, Any], checkpoint: str | None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint is not None:
            dest = self.keep / f"ckpt_{metrics['iteration']:06d}"
            shutil.copytree(checkpoint, dest)
            self.checkpoints[metrics["iteration"]] = dest

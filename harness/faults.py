"""Test hooks for the fault-injection tests (tests/harness/test_faults.py); inert unless set.

* `CAT_FAULT_DIR=<folder>`: every trial start (and every Ray Train worker's) appends
  `{"trial", "pid", "rank", "restored", "time"}` to `<folder>/starts.jsonl`, so a test can find
  the process to kill and count how often each trial started.
* `CAT_FAULT_NAN=<method label>@<iteration>`: that method's trials fill the generator's
  weights with NaN before that iteration, so its loss is NaN there (the training loop must
  stop with "non-finite loss at iteration N").
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

ENV_VARS = ("CAT_FAULT_DIR", "CAT_FAULT_NAN")


def trial_started(trial_dir: str | None, params: dict[str, Any], rank: int | None = None,
                  restored: bool = False) -> None:
    folder = os.environ.get("CAT_FAULT_DIR")
    if folder:
        line = {"trial": Path(trial_dir).name if trial_dir else None, "pid": os.getpid(),
                "rank": rank, "restored": restored, "time": time.time(),
                "method": params.get("method")}
        with open(Path(folder) / "starts.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
    nan = os.environ.get("CAT_FAULT_NAN")
    if nan:
        label, _, iteration = nan.rpartition("@")
        if params.get("method") == label:
            poison_at(int(iteration))


def poison_at(iteration: int) -> None:
    """Make the OASIS training step of `iteration` (1-based) start from NaN weights."""
    import torch

    from cat_models.oasis import train

    real = getattr(train.train_step, "__wrapped__", train.train_step)

    def step(state, g, d, *args, **kwargs):
        if state.step + 1 == iteration:
            with torch.no_grad():
                for p in state.plan.generator.parameters():
                    p.fill_(float("nan"))
        return real(state, g, d, *args, **kwargs)

    step.__wrapped__ = real
    train.train_step = step

"""Test hooks for the fault-injection tests (tests/harness/test_faults.py); inert unless set.

* `CAT_FAULT_DIR=<folder>`: every trial start (and every Ray Train worker's) appends
  `{"trial", "pid", "rank", "restored", "time"}` to `<folder>/starts.jsonl`, so a test can find
  the process to kill and count how often each trial started.
* `CAT_FAULT_NAN=<method label>@<iteration>`: that method's trials fill the generator's
  weights with NaN before that iteration, so its loss is NaN there (the training loop must
  stop with "non-finite loss at iteration N").
* `CAT_FAULT_STEP_DELAY_S=<seconds>`: every training step waits that long first, so a test
  can kill a trial between two checkpoints.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

ENV_VARS = ("CAT_FAULT_DIR", "CAT_FAULT_NAN", "CAT_FAULT_STEP_DELAY_S")


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
    delay = float(os.environ.get("CAT_FAULT_STEP_DELAY_S", "0"))
    if nan or delay:
        label, _, iteration = (nan or "").rpartition("@")
        poison = int(iteration) if nan and params.get("method") == label else None
        wrap_train_step(poison, delay)


def wrap_train_step(nan_at: int | None, delay: float = 0.0) -> None:
    """Make the OASIS training step of iteration `nan_at` (1-based) start from NaN weights,
    and every step wait `delay` seconds."""
    import torch

    from cat_models.oasis import train

    real = getattr(train.train_step, "__wrapped__", train.train_step)

    def step(state, g, d, *args, **kwargs):
        time.sleep(delay)
        if state.step + 1 == nan_at:
            with torch.no_grad():
                for p in state.plan.generator.parameters():
                    p.fill_(float("nan"))
        return real(state, g, d, *args, **kwargs)

    step.__wrapped__ = real
    train.train_step = step

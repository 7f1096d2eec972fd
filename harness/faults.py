"""Test hooks for the fault-injection tests (tests/harness/test_faults.py); inert unless set.

* `CAT_FAULT_DIR=<folder>`: every trial start (and every Ray Train worker's) appends
  `{"trial", "pid", "rank", "restored", "restored_iteration", "time"}` to
  `<folder>/starts.jsonl`, so a test can find the process to kill, count how often each trial
  started and see which checkpoint a restart began from (the iteration of the last evaluation
  in its `history.json`, the checkpoint's own).
* `CAT_FAULT_NAN=<method label>@<iteration>`: that method's trials fill the generator's
  weights with NaN before that iteration, so its loss is NaN there (the training loop must
  stop with "non-finite loss at iteration N").
* `CAT_FAULT_STEP_DELAY_S=<seconds>`: every training step waits that long first, so a test
  can kill a trial between two checkpoints.
* `CAT_FAULT_HOLD=<method label>@<iteration>`: a start of that method's trials that began
  before `iteration` stops before the step after it, appends `{"trial", "pid", "step"}` to
  `<CAT_FAULT_DIR>/holds.jsonl` and waits there (up to `HOLD_S` seconds) for the test to kill
  or interrupt it, so the fault lands after that iteration however late its report reaches
  Tune on a loaded machine. A start restored from that iteration's checkpoint does not hold.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

ENV_VARS = ("CAT_FAULT_DIR", "CAT_FAULT_NAN", "CAT_FAULT_STEP_DELAY_S", "CAT_FAULT_HOLD")
HOLD_S = 120.0


def trial_started(trial_dir: str | None, params: dict[str, Any], rank: int | None = None,
                  restore: str | None = None) -> None:
    """A start of the trial, `restore` the checkpoint folder it restores from (or None)."""
    trial = Path(trial_dir).name if trial_dir else None
    if os.environ.get("CAT_FAULT_DIR"):
        from harness.trial import MetricsHistory

        rows = MetricsHistory.restore(restore).rows if restore else []
        _record("starts.jsonl", {"trial": trial, "pid": os.getpid(), "rank": rank,
                                 "restored": restore is not None,
                                 "restored_iteration": rows[-1][0] if rows else None,
                                 "time": time.time(), "method": params.get("method")})
    poison = _iteration_for(os.environ.get("CAT_FAULT_NAN"), params)
    hold = _iteration_for(os.environ.get("CAT_FAULT_HOLD"), params)
    delay = float(os.environ.get("CAT_FAULT_STEP_DELAY_S", "0"))
    if poison or hold or delay:
        wrap_train_step(poison, delay, hold, trial)


def _record(name: str, line: dict[str, Any]) -> None:
    folder = os.environ.get("CAT_FAULT_DIR")
    if folder:
        with open(Path(folder) / name, "a") as f:
            f.write(json.dumps(line) + "\n")


def _iteration_for(spec: str | None, params: dict[str, Any]) -> int | None:
    """`<label>@<iteration>` -> the iteration, when this trial's method is that label."""
    label, _, iteration = (spec or "").rpartition("@")
    return int(iteration) if spec and params.get("method") == label else None


def wrap_train_step(nan_at: int | None, delay: float = 0.0, hold_after: int | None = None,
                    trial: str | None = None) -> None:
    """Make the OASIS training step of iteration `nan_at` (1-based) start from NaN weights,
    every step wait `delay` seconds, and the step after iteration `hold_after` wait `HOLD_S`
    seconds (to be killed there) when this start began before it."""
    import torch

    from cat_models.oasis import train

    real = getattr(train.train_step, "__wrapped__", train.train_step)

    began: list[int] = []

    def step(state, g, d, *args, **kwargs):
        if not began:
            began.append(state.step)
        time.sleep(delay)
        if hold_after is not None and state.step == hold_after and began[0] < hold_after:
            _record("holds.jsonl", {"trial": trial, "pid": os.getpid(), "step": state.step})
            time.sleep(HOLD_S)
        if state.step + 1 == nan_at:
            with torch.no_grad():
                for p in state.plan.generator.parameters():
                    p.fill_(float("nan"))
        return real(state, g, d, *args, **kwargs)

    step.__wrapped__ = real
    train.train_step = step

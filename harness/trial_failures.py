"""How a trial fails: deterministic errors end the trial instead of being retried.

Deterministic errors (`deterministic_errors()`: bad input, a non-finite loss) fail every retry
the same way, so a retry only costs a process start and a second traceback. Neither Ray 2.60
layer has a per-error retry rule: Tune's `TuneController._process_trial_failure` retries any
trial error while `Trial.should_recover()` (failures ≤ `FailureConfig.max_failures`), and Ray
Train V2's `DefaultFailurePolicy` retries every `WorkerGroupError` up to its own `max_failures`
(the policy is chosen internally by `create_failure_policy`, not by the user). What neither
retries is a trainable that returns. So the trial *ends* instead of raising (`guarded`): its last
report is `{FAILURE_KEY: "Type: message", <metric>: nan}` and Tune's `error.txt` in its folder
holds the traceback. Tune records the trial as TERMINATED; the harness counts it as failed
(`failure_of`), prints the cause, and the analysis marks it (it reads `error.txt`).

A Ray Train worker that hits one records it in `DETERMINISTIC_MARKER` (`record_worker_failure`)
and returns, so the worker group is not restarted either when all ranks fail at the same step
(a NaN loss). A rank that fails alone closes its process group, so its peers fail at once
instead of at the 30 min gloo time-out; the group Ray Train then restarts stops on the marker
without training. The trial's driver turns the marker into the failure report
(`raise_worker_failure`). The marker lives in the trial folder, like the samples rank 0 writes
there: multi-node workers need that folder shared, as for `storage_path`.

A kept consequence: `--resume` does not rerun such a trial (to Tune it finished). After fixing
its cause, a changed study starts a new experiment; the same study reruns it once `OUT/tune` is
moved aside.
"""

from __future__ import annotations

import math
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.config import StudyError

FAILURE_KEY = "trial_error"                  # in the last report of a deterministic failure
DETERMINISTIC_MARKER = "deterministic_error.txt"   # a Ray Train worker's, for its driver
ERROR_FILE = "error.txt"                     # Tune's own name: the analysis and a user look there


class WorkerFailedError(RuntimeError):
    """A deterministic error of a Ray Train worker, as its marker file recorded it."""

    def __init__(self, cause: str, trace: str) -> None:
        super().__init__(cause)
        self.cause_line, self.trace = cause, trace


def deterministic_errors() -> tuple[type[BaseException], ...]:
    """Errors that come back on every retry: the input or the trial's own numbers are at fault."""
    from cat_models.errors import InputError, NonFiniteLossError

    return (InputError, StudyError, NonFiniteLossError, WorkerFailedError)


def guarded(trial_dir: str | None, fn: Callable[[], Any],
            report: Callable[[dict[str, Any]], None], metric: str) -> None:
    """Run `fn` (a trial); a deterministic error ends the trial with a failure report
    instead of propagating, so neither Tune nor Ray Train retries it."""
    try:
        fn()
    except Exception as err:
        cause = deterministic_cause(err)
        if cause is None:
            raise
        end_failed(trial_dir, cause, report, metric, err)


def end_failed(trial_dir: str | None, cause: BaseException,
               report: Callable[[dict[str, Any]], None], metric: str,
               err: BaseException) -> None:
    """The trial's last report: `{FAILURE_KEY: "Type: message", metric: nan}` (a searcher
    sees no value: Optuna records a NaN objective as a failed trial), and `error.txt` with
    the traceback."""
    if isinstance(cause, WorkerFailedError):
        line, trace = cause.cause_line, cause.trace
    else:
        line = f"{type(cause).__name__}: {first_line(cause)}"
        trace = "".join(traceback.format_exception(err))
    if trial_dir is not None:
        (Path(trial_dir) / ERROR_FILE).write_text(
            f"{line}\n(not retried: a deterministic error fails every retry the same way)\n\n"
            f"{trace}")
    report({FAILURE_KEY: line, metric: math.nan})


def record_worker_failure(trial_dir: str, rank: int, err: BaseException) -> bool:
    """In a Ray Train worker: record a deterministic `err` for the driver and close the process
    group; returns False (nothing recorded) for any other error, which the worker re-raises."""
    cause = deterministic_cause(err)
    if cause is None:
        return False
    marker = Path(trial_dir) / DETERMINISTIC_MARKER
    part = marker.with_name(f"{marker.name}.{rank}")     # ranks may fail together
    part.write_text(f"{type(cause).__name__}: {first_line(cause)}\n"
                    + "".join(traceback.format_exception(err)))
    os.replace(part, marker)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return True


def worker_failed(trial_dir: str) -> bool:
    return (Path(trial_dir) / DETERMINISTIC_MARKER).is_file()


def raise_worker_failure(trial_dir: str) -> None:
    """In the trial's driver, after `TorchTrainer.fit`: the workers' recorded failure, if any."""
    marker = Path(trial_dir) / DETERMINISTIC_MARKER
    if marker.is_file():
        cause, _, trace = marker.read_text().partition("\n")
        raise WorkerFailedError(cause, trace)


def deterministic_cause(err: BaseException) -> BaseException | None:
    """`err`, or the exception it wraps (Ray Train's TrainingFailedError, a RayTaskError),
    if that is a deterministic error; else None."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, deterministic_errors()):
            return cause
        seen.add(id(cause))
        inner = getattr(cause, "cause", None) or cause.__cause__
        cause = inner if isinstance(inner, BaseException) else None
    return None


def first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def error_cause(err: BaseException | None) -> str:
    """`Type: message` of the exception behind Ray's wrappers (`ray::ImplicitFunc.train()
    (pid=…)` headers, Train's TrainingFailedError), first line."""
    cause: BaseException | None = err
    seen = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        inner = getattr(cause, "cause", None) or cause.__cause__
        if inner is None or not isinstance(inner, BaseException):
            break
        cause = inner
    if cause is None:
        return ""
    text = str(cause).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if lines and lines[0].startswith("ray::"):     # the header of an unpicklable cause
        tail = [ln for ln in lines if not ln.startswith((" ", "ray::", "Traceback"))]
        return tail[-1] if tail else lines[-1]
    return f"{type(cause).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def failure_of(result: Any) -> str | None:
    """Why a trial of a `ResultGrid` failed (`Type: message`), or None: Tune's error (retries
    used up) or the failure report of a deterministic error (`FAILURE_KEY`)."""
    if result.error is not None:
        return error_cause(result.error)
    return (result.metrics or {}).get(FAILURE_KEY)

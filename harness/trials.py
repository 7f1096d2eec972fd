"""Ray Tune over a study's trials; each trial trains in-process or as a Ray Train run.

* `workers_per_trial == 1`: the Tune function trainable runs `harness.trial.run_trial` itself
  (`tune_single`). Starting a `TorchTrainer` costs ~20 s on a 2-core machine (measured:
  worker group, process group, storage set-up) for nothing a single worker needs; both paths call the same `run_trial` with the same seeds, so they give
  the same numbers (tests/harness/test_trials.py checks it).
* `workers_per_trial > 1`: the trainable is a small driver (`tune_driver`) that launches a Ray
  Train V2 `TorchTrainer` with that many DDP workers (`ddp_backend`: nccl with a whole GPU per
  worker, gloo on CPU or on shared GPUs) and forwards their reports to Tune with
  `TuneReportCallback`.

Checkpoints ride on the evaluation reports (every `checkpoint_every` iterations); a failed trial
is retried from its last checkpoint (`resources.max_failures`), and `--resume` restores the whole
Tune experiment without rerunning finished trials: also those Tune had not yet recorded as
finished when the driver died (a start that finds the trial's `FinalReport` sends it again and
trains nothing).

A deterministic error (bad input, a non-finite loss) is not retried: the trial ends with a
failure report instead (`harness.trial_failures`, which says why that is the mechanism).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness import trial_failures as failures
from harness import tune as study_tune
from harness.config import Study, StudyError
from harness.stages import CODE_VERSION, Artifacts
from harness.trial import FinalReport, run_trial

EXPERIMENT = "tune"   # the Tune experiment folder inside the study's output folder


def _device(gpus: float) -> str:
    import torch

    return "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"


def ddp_backend(gpus_per_worker: float) -> str:
    """The process-group backend of a multi-worker trial: nccl when every worker holds a whole
    GPU; gloo on CPU, and on a fraction of a GPU, where Ray may place two ranks of the group on
    one device and NCCL refuses them ("Duplicate GPU detected"). Gloo all-reduces CUDA tensors
    too (through host memory): measured on one H200, a 2-rank gloo step on CUDA gives one
    process's gradients to 1.2e-5 with TF32 off."""
    return "nccl" if gpus_per_worker >= 1 else "gloo"


def _restore_dir(checkpoint: Any, scratch: str) -> str | None:
    """Copy a Ray checkpoint's files to a local folder run_trial can read, checked first: a
    damaged `latest.pt` stops the trial with its path (not a zip error from deep in torch)."""
    if checkpoint is None:
        return None
    from cat_models.data.cache import verify_file
    from cat_models.errors import CheckpointError, CorruptArtifactError

    folder = checkpoint.to_directory(scratch)
    try:
        verify_file(Path(folder) / "latest.pt")
    except CorruptArtifactError as err:
        where = getattr(checkpoint, "path", folder)
        raise CheckpointError(f"{where}/latest.pt: trial checkpoint to restore from is damaged "
                              f"({str(err).split(': cached artifact is ', 1)[-1]}); delete "
                              "that checkpoint folder to restart the trial from the one "
                              "before") from None
    return folder


def _replay_finished(trial_dir: str | None, send: Callable[[dict[str, Any]], None]) -> bool:
    """A trial that finished in an earlier run (its `FinalReport` is in its folder) sends that
    report again and trains nothing: True when it did."""
    final = FinalReport.load(trial_dir)
    if final is None:
        return False
    print(f"[trial] {Path(str(trial_dir)).name}: finished in an earlier run; its final report "
          "is sent again and nothing is trained", flush=True)
    send(final)
    return True


def tune_single(params: dict[str, Any], artifacts: Artifacts) -> None:
    """Tune function trainable: one trial, one worker, in this process."""
    import tempfile

    from ray import tune
    from ray.tune import Checkpoint

    res = artifacts.study.resources
    ctx = tune.get_context()

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        if checkpoint_dir is None:
            tune.report(metrics)
        else:
            tune.report(metrics, checkpoint=Checkpoint.from_directory(checkpoint_dir))

    def run() -> None:
        from harness import faults

        if _replay_finished(ctx.get_trial_dir(), tune.report):
            return
        with tempfile.TemporaryDirectory(prefix="cat-restore-") as scratch:
            restore = _restore_dir(tune.get_checkpoint(), scratch)
            faults.trial_started(ctx.get_trial_dir(), params, restore=restore)
            run_trial(params, artifacts, report, trial_dir=ctx.get_trial_dir(),
                      restore=restore, device=_device(res.gpus_per_worker),
                      threads=max(1, int(res.cpus_per_worker)))

    failures.guarded(ctx.get_trial_dir(), run, tune.report, artifacts.study.search.metric)


def train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train worker loop: every rank runs `run_trial`; rank 0 evaluates and checkpoints."""
    import tempfile

    import ray.train
    from ray.train import Checkpoint

    artifacts: Artifacts = loop_config["artifacts"]
    res = artifacts.study.resources

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        checkpoint = Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        # Tune stops a trial at a result with done=True: forwarded, it would kill this trial's
        # driver before TorchTrainer frees its workers' placement group (the CPUs then leak).
        ray.train.report({k: v for k, v in metrics.items() if k != "done"}, checkpoint=checkpoint)

    from harness import faults

    trial_dir = loop_config["trial_dir"]
    rank = ray.train.get_context().get_world_rank()
    if failures.worker_failed(trial_dir):
        return        # a restarted worker group after one rank failed deterministically
    try:
        with tempfile.TemporaryDirectory(prefix="cat-restore-") as scratch:
            restore = _restore_dir(ray.train.get_checkpoint(), scratch)
            faults.trial_started(trial_dir, loop_config["params"], rank=rank, restore=restore)
            run_trial(loop_config["params"], artifacts, report, trial_dir=trial_dir,
                      restore=restore, device=_device(res.gpus_per_worker),
                      threads=max(1, int(res.cpus_per_worker)))
    except Exception as err:
        # a deterministic error is recorded and the worker returns: Ray Train then does not
        # restart the worker group, and the driver reports the failure
        if not failures.record_worker_failure(trial_dir, rank, err):
            raise


def tune_driver(params: dict[str, Any], artifacts: Artifacts, storage: str) -> None:
    """Tune function trainable that runs the trial as a TorchTrainer (DDP over N workers)."""
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    res = artifacts.study.resources
    ctx = tune.get_context()
    use_gpu = res.gpus_per_worker > 0
    resources = {"CPU": res.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = res.gpus_per_worker
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"params": params, "artifacts": artifacts,
                           "trial_dir": ctx.get_trial_dir()},
        torch_config=TorchConfig(backend=ddp_backend(res.gpus_per_worker)),
        scaling_config=ScalingConfig(num_workers=res.workers_per_trial, use_gpu=use_gpu,
                                     resources_per_worker=resources),
        # The same name on a retry makes Ray Train resume from the run's last checkpoint.
        run_config=RunConfig(name=f"train-{ctx.get_trial_id()}", storage_path=storage,
                             callbacks=[TuneReportCallback()],
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=res.max_failures)),
    )
    trial_dir = ctx.get_trial_dir()

    def fit() -> None:
        if _replay_finished(trial_dir, tune.report):
            return
        try:
            trainer.fit()
        except Exception:
            if not failures.worker_failed(trial_dir):
                raise          # a worker died and Ray Train gave up: Tune retries the driver
        failures.raise_worker_failure(trial_dir)

    failures.guarded(trial_dir, fit, tune.report, artifacts.study.search.metric)


def trainable(study: Study, artifacts: Artifacts, storage: str) -> Callable:
    from ray import tune

    r = study.resources
    if r.workers_per_trial == 1:
        fn = tune.with_parameters(tune_single, artifacts=artifacts)
        res = {"CPU": r.cpus_per_worker, "GPU": r.gpus_per_worker}
    else:
        fn = tune.with_parameters(tune_driver, artifacts=artifacts, storage=storage)
        res = {"CPU": study_tune.DRIVER_CPU}
    return tune.with_resources(fn, {k: v for k, v in res.items() if v})


def reuses_processes(study: Study) -> bool:
    """Whether a finished trial's process takes the next trial (Tune's `reuse_actors`).

    Single-worker trials train in the Tune actor itself and seed everything they draw from the
    trial's own seed, so a reused process gives the same numbers; it saves the start of a
    Python process with torch and Ray per trial: in the main job on a 2-core CPU VM the fixed
    cost per trial fell from 5.1-5.5 s to 1.0-1.5 s (about 5.5% -> 2% of a trial), with the
    same results. The workers run with one malloc arena (`MALLOC_ARENA_MAX`, set by the
    harness's runtime_env): Tune runs each reused trial in a new thread, and glibc's
    per-thread arenas otherwise keep ~100 MB of every finished trial. A multi-worker trial's
    actor only drives its TorchTrainer, whose workers start anew anyway. A failed trial's
    process is never reused (Tune starts a fresh one).
    """
    return study.resources.workers_per_trial == 1


def storage_of(study: Study, out: Path) -> str:
    """Where Tune keeps the experiment: `<storage_path>/<study name>`, else the output folder."""
    if study.storage_path:
        base = study.storage_path
        return f"{base.rstrip('/')}/{study.name}" if "://" in base \
            else str(Path(base).resolve() / study.name)
    return str(out.resolve())


def link_experiment(study: Study, out: Path, log: Callable[[str], None]) -> None:
    """Make OUT/tune show the experiment kept under a (shared) `storage_path`.

    A cloud URI cannot be linked: the analysis then needs a local copy of the experiment
    (e.g. `aws s3 sync`) in OUT/tune, and `python -m harness.analyze OUT`.
    """
    path = experiment_path(study, out)
    local = out / EXPERIMENT
    if "://" in path:
        log(f"[trials] experiment stored at {path}; copy it to {local} to analyse it here")
        return
    if Path(path).resolve() == local.resolve():
        return
    if local.is_symlink() or not local.exists():
        if local.is_symlink():
            local.unlink()
        local.symlink_to(Path(path).resolve(), target_is_directory=True)


def experiment_path(study: Study, out: Path) -> str:
    base = storage_of(study, out)
    return f"{base.rstrip('/')}/{EXPERIMENT}" if "://" in base else str(Path(base) / EXPERIMENT)


def reuse_or_replace(old: dict, key: dict, path: str, resume: bool, restorable: bool,
                     log: Callable[[str], None]) -> bool:
    """Whether the experiment at `path` is resumed; moves it aside when its study changed.

    `old` is the `trials.json` the last run wrote (`trials_fingerprint` + path), `key` this
    run's. The experiment is replaced only when its study really changed: a rebuilt stage
    artifact (same study, other `artifacts` hash) keeps its finished trials, with a note; a
    marker written before the study key existed is not known to differ, so it is kept. With
    `--resume` nothing is moved, a changed study only warned about. A remote experiment
    (`://`) is never moved (the new experiment is then started at the same path).
    """
    same_study = old.get("study", key["study"]) == key["study"]
    if resume and old and not same_study:
        log("[trials] warning: the study changed since this experiment ran; --resume keeps "
            "its finished trials as they are (rerun without --resume to start a new "
            "experiment and keep the old one aside)")
    if resume or not restorable:
        return resume
    if same_study:
        changed = old.get("artifacts") not in (None, key["artifacts"])
        log(f"[stage] trials: the experiment at {path} ran this same study: its finished "
            "trials are reused, unfinished ones continue"
            + ("; note: stage artifacts were rebuilt since (the finished trials were "
               "trained on the earlier ones)" if changed else ""))
        return True
    if "://" not in path:
        aside = f"{path}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
        Path(path).rename(aside)
        log(f"[trials] the study changed since the experiment at {path}: it was moved to "
            f"{aside} and a new one starts")
    return False


def run_trials(study: Study, artifacts: Artifacts, out: Path, cluster: dict[str, float],
               resume: bool, log: Callable[[str], None]):
    """Run (or resume) the study's Tune experiment; returns the `ResultGrid`."""
    from ray import tune
    from ray.tune import CheckpointConfig, FailureConfig

    storage = storage_of(study, out)
    path = experiment_path(study, out)
    fn = trainable(study, artifacts, storage)
    concurrency = study_tune.max_concurrency(study, cluster)
    key = trials_fingerprint(study, artifacts)
    marker = out / "trials.json"
    old = json.loads(marker.read_text()) if marker.is_file() else {}
    resume = reuse_or_replace(old, key, path, resume,
                              not resume and tune.Tuner.can_restore(path), log)
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({**key, "experiment": path}, indent=1))
    if resume:
        if not tune.Tuner.can_restore(path):
            raise StudyError(f"--resume: no Tune experiment to restore at {path}")
        log(f"[trials] resuming {path}: finished trials are kept, unfinished ones restart "
            "from their last checkpoint")
        tuner = tune.Tuner.restore(path, trainable=fn, resume_unfinished=True,
                                   resume_errored=True, restart_errored=False,
                                   param_space=study_tune.param_space(study))
    else:
        n = study_tune.grid_size(study) if study.search.algorithm == "grid" \
            else study.search.num_samples
        log(f"[trials] {n} trial(s), up to {concurrency} at a time; results in {path}")
        tuner = tune.Tuner(
            fn,
            param_space=study_tune.param_space(study),
            tune_config=tune.TuneConfig(
                metric=study.search.metric, mode=study.search.mode,
                search_alg=study_tune.search_algorithm(study),
                scheduler=study_tune.scheduler(study),
                num_samples=study.search.num_samples, max_concurrent_trials=concurrency,
                trial_dirname_creator=trial_dirname, reuse_actors=reuses_processes(study)),
            run_config=tune.RunConfig(
                name=EXPERIMENT, storage_path=storage,
                failure_config=FailureConfig(max_failures=study.resources.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
                verbose=int(os.environ.get("CAT_TUNE_VERBOSE", "1"))),
        )
    link_experiment(study, out, log)
    with quiet_restore_hint():
        grid = tuner.fit()
    outcome = trial_outcomes(grid)
    log(f"[trials] {outcome['finished']} finished, {outcome['failed']} failed"
        + (f", {outcome['interrupted']} interrupted" if outcome["interrupted"] else "")
        + f" ({path})")
    for result in grid:
        cause = failures.failure_of(result)
        if cause is not None:
            log(f"[trials] failed trial {Path(result.path).name}: {cause}")
    grid.outcome = outcome
    return grid


def trial_outcomes(grid: Any) -> dict[str, int]:
    """finished (reported its last iteration) / failed / interrupted (stopped mid-run by
    Ctrl-C: neither finished nor failed) trials of a `ResultGrid`."""
    counts = {"finished": 0, "failed": 0, "interrupted": 0}
    for result in grid:
        if failures.failure_of(result) is not None:
            counts["failed"] += 1
        elif (result.metrics or {}).get("done") is True or any(
                k.startswith("final_") for k in (result.metrics or {})):
            counts["finished"] += 1
        else:
            counts["interrupted"] += 1
    return counts


class _NoRestoreHint:
    """Drops Ray Tune's `Tuner.restore(path=..., trainable=...)` hint: the harness prints its
    own `--resume` command line instead."""

    def filter(self, record: Any) -> bool:
        return "restore(" not in record.getMessage()


@contextlib.contextmanager
def quiet_restore_hint() -> Iterator[None]:
    logger, hint = logging.getLogger("ray.tune.tune"), _NoRestoreHint()
    logger.addFilter(hint)
    try:
        yield
    finally:
        logger.removeFilter(hint)


# Study fields added after experiments were run: they enter the trials' key only when set to
# something else than their default (which computes what the trials ran), so an experiment
# finished before them is kept, not moved aside as "changed".
KEYED_WHEN_SET = {"training": ("d_augment",)}


def study_spec(study: Study) -> dict[str, Any]:
    """The part of the study that decides the trials' results, as plain data."""
    spec = study.model_dump(mode="json")
    for key in ("description", "output_dir", "storage_path", "cache_dir", "resources"):
        spec.pop(key, None)
    for block, names in KEYED_WHEN_SET.items():
        fields = type(getattr(study, block)).model_fields
        for name in names:
            if spec[block].get(name) == fields[name].default:
                spec[block].pop(name)
    return spec


def trials_fingerprint(study: Study, artifacts: Artifacts) -> dict[str, str]:
    """What decides the trials' results: `study` (`study_spec`: the study minus where/how it
    runs; a change there starts a new experiment) and `artifacts` (the stage artifacts'
    content, noted only: a rebuilt artifact does not replace finished trials)."""
    from harness.cache import file_hash, input_hash

    spec = study_spec(study)
    arts = {"source": artifacts.source_hash,
            "subsets": {str(s): idx for s, idx in artifacts.subsets.items()},
            "affinities": {str(k): file_hash(p) for k, p in artifacts.affinities.items()}}
    study_key = input_hash({"study": spec, "code": CODE_VERSION})
    return {"study": study_key, "artifacts": input_hash(arts),
            "fingerprint": input_hash([study_key, input_hash(arts)])}


def trial_dirname(trial: Any) -> str:
    """Readable trial folders: train_00003_cat-combination_s25_seed0."""
    c = trial.config
    return (f"train_{trial.trial_id.split('_')[-1]}_{c.get('method')}_s{c.get('target_size')}"
            f"_seed{c.get('seed')}")

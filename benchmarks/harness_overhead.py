"""Harness overhead of one OASIS trial: the same trial run bare, as a Tune trial, as a Ray Train
run (1 worker and 2 DDP workers); prints Markdown tables.

    python benchmarks/harness_overhead.py [--study studies/dataset_size.yaml]
        [--short 40] [--long 200] [--repeats 3] [--modes bare,tune,train1,train2]

Every mode runs `harness.trial.run_trial` on the same artifacts (the study's cached stages,
built first if missing), method `cat-combination`, the smallest target size, seed 0, one
evaluation at the end (`eval_every` = iterations), one thread per worker:

* `bare`: `run_trial` called in this process, no Ray in the loop;
* `tune`: a one-trial Tune experiment of `harness.trials.tune_single` (the path a study with
  `workers_per_trial: 1` takes);
* `train1` / `train2`: a one-trial Tune experiment of `harness.trials.tune_driver`, i.e. a
  Ray Train `TorchTrainer` with 1 / 2 gloo workers (`train2` at twice the global batch, so the
  per-worker batch is the same).

Each mode runs a short and a long trial (`--short`, `--long` iterations); the modes take turns
within each repeat, so they see the same machine load. The step time of a mode is
(loop time of the long trial − loop time of the short one) / (long − short), where the loop
time is the trial's own `wall_time_s` (from the first step to the final report): the set-up,
the one evaluation and the checkpoint cancel out. The fixed cost of a trial is its outer wall
time (the `run_trial` call, or `Tuner.fit`) minus its loop time: process and worker start,
source model, data, segmenter and Inception loading, Ray's bookkeeping and tear-down.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.config import load_study

MODES = ("bare", "tune", "train1", "train2")


def variant(study_file: str, iterations: int, workers: int, base: list[str]) -> Any:
    sets = [*base, f"training.iterations={iterations}", f"training.eval_every={iterations}",
            f"training.checkpoint_every={iterations}",
            f"training.stage1_iterations={iterations // 3}",
            f"resources.workers_per_trial={workers}"]
    if workers > 1:
        # the Tune driver of a TorchTrainer trial takes 0.01 CPU: 2 x 0.99 fits on 2 CPUs
        # (one torch thread each all the same: threads = int(cpus), at least 1)
        sets += [f"training.batch_size={8 * workers}", "resources.cpus_per_worker=0.99"]
    return load_study(study_file, sets)


def prepare(study: Any, out: Path):
    """Build (or load from the cache) every stage a trial of `study` needs."""
    import ray

    from cat_models.data import cache_root
    from harness.stages import prepare_artifacts, stage_datasets, stage_subsets

    cache = cache_root(study.cache_dir)
    log = print
    source, target = stage_datasets(study, cache, "benchmark", log)
    subsets = stage_subsets(study, target, cache, "benchmark", log)
    return prepare_artifacts(study, source, target, subsets, cache, out, log,
                             ray.cluster_resources())


def run_bare(art: Any, params: dict[str, Any]) -> tuple[float, float]:
    from harness.trial import run_trial

    with tempfile.TemporaryDirectory(prefix="bench-bare-") as trial_dir:
        start = time.perf_counter()
        last = run_trial(params, art, lambda metrics, checkpoint: None, trial_dir=trial_dir,
                         threads=1)
        return time.perf_counter() - start, float(last["wall_time_s"])


def run_tuned(fn: Any, params: dict[str, Any], storage: Path) -> tuple[float, float]:
    """A one-trial Tune experiment of the trainable `fn`: (Tuner.fit wall, trial loop time)."""
    from ray import tune

    tuner = tune.Tuner(fn, param_space=dict(params),
                       run_config=tune.RunConfig(name=f"t{time.monotonic_ns()}",
                                                 storage_path=str(storage), verbose=0))
    start = time.perf_counter()
    grid = tuner.fit()
    outer = time.perf_counter() - start
    result = grid[0]
    if result.error is not None:
        raise RuntimeError(f"benchmark trial failed: {result.error}")
    return outer, float(result.metrics["wall_time_s"])


def trainable_of(mode: str, art: Any, storage: Path) -> Any:
    """The harness's own trainable for `tune`; its TorchTrainer driver for `train1`/`train2`
    (the harness takes the in-process path for 1 worker, so `train1` forces the driver)."""
    from ray import tune

    from harness import tune as study_tune
    from harness.trials import trainable, tune_driver

    if mode == "tune":
        return trainable(art.study, art, str(storage))
    return tune.with_resources(
        tune.with_parameters(tune_driver, artifacts=art, storage=str(storage)),
        {"CPU": study_tune.DRIVER_CPU})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--study", default="studies/dataset_size.yaml")
    p.add_argument("--short", type=int, default=40)
    p.add_argument("--long", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        p.error(f"--modes: unknown {sorted(unknown)}; choose from {MODES}")

    import os

    import ray
    import torch

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # Ray starts its workers at nice 15; at 0 they keep priority over niced background jobs
    # on a shared machine, as the bare loop in this process does.
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "RAY_TRAIN_V2_ENABLED": "1"}})
    base = variant(args.study, args.long, 1, args.overrides)
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    art = prepare(base, work / "out")
    torch.set_num_threads(1)
    params = {"method": base.methods[0].label, "target_size": min(base.target_sizes),
              "seed": base.seeds[0]}
    workers = {"bare": 1, "tune": 1, "train1": 1, "train2": 2}
    rows: dict[str, dict[int, list[tuple[float, float]]]] = {m: {} for m in modes}
    for rep in range(args.repeats):
        for iterations in (args.short, args.long):
            for mode in modes:
                study = variant(args.study, iterations, workers[mode], args.overrides)
                trial_art = dataclasses.replace(art, study=study)
                if mode == "bare":
                    outer, loop = run_bare(trial_art, params)
                else:
                    storage = work / "tune"
                    outer, loop = run_tuned(trainable_of(mode, trial_art, storage), params,
                                            storage)
                rows[mode].setdefault(iterations, []).append((outer, loop))
                print(f"[bench] repeat {rep + 1}/{args.repeats} {mode:6s} {iterations:4d} its: "
                      f"outer {outer:7.1f} s, loop {loop:7.1f} s", flush=True)
    ray.shutdown()
    report(rows, args.short, args.long, workers)
    return 0


def report(rows: dict[str, dict[int, list[tuple[float, float]]]], short: int, long: int,
           workers: dict[str, int]) -> None:
    def step_times(mode: str) -> list[float]:
        return [(lng[1] - sht[1]) / (long - short)
                for sht, lng in zip(rows[mode][short], rows[mode][long], strict=True)]

    bare = statistics.median(step_times("bare")) if "bare" in rows else None
    print("\n| mode | step time, median (min–max) | images/s | vs bare | fixed cost per trial, "
          "median | fixed cost / long trial |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode in rows:
        steps = step_times(mode)
        med = statistics.median(steps)
        fixed = [o - lp for o, lp in rows[mode][long]]
        outer = statistics.median(o for o, _ in rows[mode][long])
        images = 8 * workers[mode] / med
        ratio = f"{images / (8 / bare):.3f}×" if bare else "–"   # images/s vs bare
        print(f"| {mode} | {med * 1000:.0f} ms ({min(steps) * 1000:.0f}–{max(steps) * 1000:.0f})"
              f" | {images:.1f} | {ratio} | {statistics.median(fixed):.1f} s | "
              f"{statistics.median(fixed) / outer:.1%} |")


if __name__ == "__main__":
    sys.exit(main())

"""The Ray layer on a GPU machine: the harness's Tune trials and its Ray Train DDP trial on CUDA.

    python benchmarks/gpu_ray_check.py --out DIR [--carry .devcarry] [--sections a,b,...]
        [--device cpu --quick]

`benchmarks/gpu_check.py` runs `run_trial` on CUDA directly; this script runs the same trial
the way a study does, through `harness.trials.run_trials` (Ray Tune, and Ray Train for
`workers_per_trial > 1`) on a local Ray that sees the machine's GPU. It needs the folder that
`benchmarks/gpu_prepare.py` writes (`--carry`) and the same stand-in Inception as
`gpu_check.py` (FID / KID time the evaluation but are not comparable with other numbers; mIoU
uses the study's own segmenter and is). Rows go to `DIR/gpu_check.jsonl`. Sections:

* `single`: the main job's CAT trial (size 50, seed 0, fp32) called directly (`run_trial` in
  this process with the Tune trial's `cpus_per_worker` torch threads, the "bare" run) and then as a one-trial Tune experiment with
  `gpus_per_worker: 1`: the same reports expected, and the Tune trial's fixed cost.
* `ddp`: the same trial with `workers_per_trial: 2, gpus_per_worker: 0.5`, i.e. a Ray Train
  `TorchTrainer` of two DDP workers sharing the one GPU (`harness.trials.ddp_backend` picks
  gloo there: NCCL refuses two ranks on one device).
* `scaling`: DDP scaling through Ray Train, the main job's CAT trial with 1 worker and with
  one worker per GPU (nccl; 2 workers with gloo in the CPU rehearsal) at the same per-worker
  batch (the study's `batch_size` is the global batch, so it is multiplied by the workers),
  bf16 autocast off and on (on CUDA): images per second of the training loop, its ratio to
  one worker's, and the final mIoU. On a one-GPU machine it records that there is nothing to
  scale and measures the one-worker rows only.
* `packed`: the main job's whole grid with `gpus_per_worker: 0.125, cpus_per_worker: 2`
  (8 trials at once on a 16-core, one-GPU machine): the trial phase's wall time, trials per
  hour, and the per-trial fixed cost (`benchmarks/trial_fixed_cost.py`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gpu_check
import torch

QUICK = False
GPU = 1.0          # gpus_per_worker of a whole-GPU trial (0 for the CPU rehearsal)
CPUS = 2           # cpus_per_worker (1 for the rehearsal on a 2-core machine)


emit = gpu_check.emit     # rows to OUT/gpu_check.jsonl (`main` sets gpu_check.OUT)


def shrink(study):
    """The study, tiny for `--quick` (a rehearsal on CPU), unchanged otherwise; fp32 always
    (bf16 autocast is slower at the embedded widths, measured by `gpu_check.py`)."""
    training = {"amp": False}
    update: dict[str, Any] = {}
    if QUICK:
        training |= {"iterations": 4, "eval_every": 2, "stage1_iterations": 2,
                     "checkpoint_every": 2}
        update["evaluation"] = study.evaluation.model_copy(update={"n_samples": 8})
    update["training"] = study.training.model_copy(update=training)
    return study.model_copy(update=update)


def with_resources(study, name: str, **resources):
    return study.model_copy(update={
        "name": name, "resources": study.resources.model_copy(update=resources)})


def one_trial(study):
    return study.model_copy(update={"methods": study.methods[:1], "target_sizes": [50],
                                    "seeds": [0]})


def prepare(carry: Path):
    """Artifacts from `--carry` with the stand-in Inception, and its real statistics computed
    once here (as the harness's real-statistics stage does before any trial starts)."""
    from cat_models.metrics.evaluator import Evaluator
    from cat_models.segmenters import load_segmenter
    from harness.stages_common import eval_sample_count, floor_split

    art, work = gpu_check.carried_artifacts(carry, "gpu-ray-")
    art = dataclasses.replace(art, study=shrink(art.study))
    test = art.target_ref.open("val")
    start = time.perf_counter()
    Evaluator(test, test, load_segmenter(art.eval_segmenter), feature_net=art.feature_net,
              n_samples=eval_sample_count(art.study, len(test)), cache_dir=art.stats_cache,
              seed=0, floor_dataset=floor_split(art.target_ref))
    emit("prepare", statistics_s=round(time.perf_counter() - start, 1),
         methods=[m.label for m in art.study.methods], sizes=art.study.target_sizes,
         seeds=art.study.seeds, iterations=art.study.training.iterations)
    return art, work


def tune_rows(grid) -> list[dict[str, Any]]:
    from harness import trial_failures as failures

    rows = []
    for result in grid:
        m = result.metrics or {}
        rows.append({"trial": Path(result.path).name, "method": m.get("method"),
                     "target_size": m.get("target_size"), "iteration": m.get("iteration"),
                     "final_miou": m.get("final_miou"), "time_total_s": m.get("time_total_s"),
                     "loop_s": m.get("wall_time_s"), "failure": failures.failure_of(result)})
    return rows


def run_study(study, art, out: Path) -> tuple[float, list[dict[str, Any]]]:
    import ray

    from harness.pipeline import check_fits
    from harness.trials import run_trials

    check_fits(study, ray.cluster_resources(), study.name)    # as the harness does first
    start = time.perf_counter()
    grid = run_trials(study, dataclasses.replace(art, study=study), out / study.name,
                      ray.cluster_resources(), False, lambda line: print(line, flush=True))
    return time.perf_counter() - start, tune_rows(grid)


SINGLE_RUNS = itertools.count(1)   # a repeated section gets a study of its own (a finished
                                   # one would be reused)


def single(art, work: Path) -> None:
    from harness.trial import run_trial

    run = next(SINGLE_RUNS)
    study = one_trial(art.study)
    params = {"method": study.methods[0].label, "target_size": 50, "seed": 0}
    reports: list[dict] = []
    start = time.perf_counter()
    last = run_trial(params, dataclasses.replace(art, study=study),
                     lambda m, c: reports.append(dict(m)),
                     trial_dir=str(work / f"bare{run}"), device=gpu_check.DEVICE,
                     threads=CPUS)   # the Tune trial's torch threads (cpus_per_worker)
    bare = time.perf_counter() - start
    emit("single", run="bare", wall_s=round(bare, 2), loop_s=last["wall_time_s"],
         miou=[r.get("miou") for r in reports], fid=[r.get("fid") for r in reports])
    wall, rows = run_study(with_resources(study, f"ray_single{run}",
                                          gpus_per_worker=GPU,
                                          cpus_per_worker=CPUS), art, work)
    emit("single", run="tune", wall_s=round(wall, 2), trials=rows,
         fixed_cost_s=round(wall - (rows[0]["loop_s"] or 0), 2),
         miou_equal_to_bare=rows[0]["final_miou"] == last.get("final_miou"),
         bare_final_miou=last.get("final_miou"))


def ddp(art, work: Path) -> None:
    from harness.trials import ddp_backend

    study = with_resources(one_trial(art.study), "ray_ddp", workers_per_trial=2,
                           cpus_per_worker=CPUS, gpus_per_worker=GPU / 2)
    wall, rows = run_study(study, art, work)
    emit("ddp", backend=ddp_backend(GPU / 2), wall_s=round(wall, 2), trials=rows)


def scaling(art, work: Path) -> None:
    from harness.trials import ddp_backend

    gpus = torch.cuda.device_count() if gpu_check.DEVICE == "cuda" else 0
    widest = gpus if gpus else 2          # the rehearsal: two gloo workers on the CPU
    if gpu_check.DEVICE == "cuda" and gpus < 2:
        emit("scaling", note=f"{gpus} GPU: nothing to scale, one-worker rows only")
    base = one_trial(art.study)
    per_worker = base.training.batch_size
    one_eval = base.training.iterations     # one evaluation, at the end: the loop is training
    single: dict[bool, float] = {}
    for amp in ((False, True) if gpus else (False,)):
        for workers in sorted({1, widest}):
            study = with_resources(base, f"ray_scaling_{workers}w_amp{int(amp)}",
                                   workers_per_trial=workers, cpus_per_worker=CPUS,
                                   gpus_per_worker=GPU)
            training = study.training.model_copy(update={
                "batch_size": per_worker * workers, "amp": amp, "eval_every": one_eval,
                "checkpoint_every": one_eval})
            study = study.model_copy(update={"training": training})
            wall, rows = run_study(study, art, work / "scaling")
            row = rows[0]
            images = training.iterations * training.batch_size
            rate = images / row["loop_s"] if row["loop_s"] else None
            if workers == 1 and rate:
                single[amp] = rate
            emit("scaling", workers=workers, amp=amp, backend=ddp_backend(GPU) if workers > 1
                 else None, global_batch=training.batch_size, iterations=training.iterations,
                 wall_s=round(wall, 2), loop_s=row["loop_s"],
                 images_per_s=round(rate, 2) if rate else None,
                 vs_one_worker=round(rate / single[amp], 3) if rate and amp in single else None,
                 final_miou=row["final_miou"], failure=row["failure"])


def packed(art, work: Path) -> None:
    study = with_resources(art.study, "ray_packed", gpus_per_worker=GPU / 8,
                           cpus_per_worker=CPUS, max_concurrent_trials=None)
    wall, rows = run_study(study, art, work / "packed")
    done = [r for r in rows if not r["failure"]]
    emit("packed", wall_s=round(wall, 2), trials=len(rows), finished=len(done),
         trials_per_hour=round(len(done) / wall * 3600, 1), rows=rows)
    cost = subprocess.run([sys.executable, str(REPO / "benchmarks" / "trial_fixed_cost.py"),
                           str(work / "packed"), "--concurrency",
                           str(int(os.cpu_count() // CPUS))],
                          capture_output=True, text=True, check=False)
    emit("packed_fixed_cost", output=(cost.stdout + cost.stderr)[-4000:])


SECTIONS = {"single": single, "ddp": ddp, "scaling": scaling, "packed": packed}


def main() -> int:
    global QUICK, GPU, CPUS
    args = gpu_check.device_script_args(__doc__, SECTIONS).parse_args()
    QUICK, gpu_check.DEVICE = args.quick, args.device
    GPU = 1.0 if args.device == "cuda" else 0.0
    CPUS = 1 if QUICK else 2
    gpu_check.OUT = Path(args.out)
    gpu_check.OUT.mkdir(parents=True, exist_ok=True)
    import ray

    emit("env", ray=ray.__version__, torch=torch.__version__, cpus=os.cpu_count(),
         gpus=torch.cuda.device_count(), python=sys.version.split()[0])
    art, work = prepare(Path(args.carry))
    from harness.pipeline import worker_env

    start = time.perf_counter()
    # the rehearsal declares 4 logical CPUs so that a 2-worker trial fits on 2 cores
    ray.init(num_cpus=max(os.cpu_count(), 4 if QUICK else 1), num_gpus=torch.cuda.device_count(),
             include_dashboard=False, log_to_driver=True,
             runtime_env={"env_vars": worker_env()})   # the workers' env of harness.run
    emit("timing", of="ray_init", seconds=round(time.perf_counter() - start, 1))
    failed = 0
    try:
        for name in args.sections.split(","):
            start = time.perf_counter()
            try:
                SECTIONS[name](art, work)
            except Exception:  # noqa: BLE001 - record it, run the next section
                failed += 1
                emit(name, error=traceback.format_exc()[-3000:])
            emit("timing", of=name, seconds=round(time.perf_counter() - start, 1))
    finally:
        ray.shutdown()
    print(json.dumps({"failed_sections": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

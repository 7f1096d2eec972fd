"""What the evaluation of a trial costs, how close it is to the Inception forward, and how many
samples it needs to rank two models the way a large sample ranks them; prints Markdown.

    python benchmarks/eval_cost.py [--study studies/dataset_size.yaml] [--seeds 8]
        [--counts 16,32,64,150]

1. Cost share. The main job's trial (method `cat-combination` and `no-cat`, the smallest
   target size, seed 0, the study's iterations and evaluation schedule) is finetuned in this
   process through the model-family seam, with the trial code's evaluation (FID / KID / mIoU
   on `evaluation.n_samples` samples + the sample grid) timed apart from the training.
2. The limit. The Inception forward alone (`inception_features` on as many images of the
   trial's resolution, same batch size) against the whole evaluation: generation, Inception,
   segmenter and KID together.
3. Ranking per second. The EMA generators of every evaluation step of both trials are kept;
   each pair is scored with n samples (`--counts`) under `--seeds` different noise seeds.
   Agreement = the share of seeds whose order of the pair (FID, KID, mIoU) equals the order
   the largest n gives on average over its seeds; time = one evaluation of one model at n.
   Pairs: CAT vs no CAT at the end (a large gap), and CAT at its last two evaluations (a
   small gap: what choosing a checkpoint or a learning rate asks of the metric).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.harness_overhead import prepare
from harness.analysis.metrics import metric_spec
from harness.config import load_study


def finetune_keeping_generators(art: Any, params: dict[str, Any], evaluator: Any,
                                grid_n: int) -> tuple[dict[int, Any], float, float]:
    """Finetune one trial as `harness.trial.run_trial` does; returns {step: EMA copy}, the
    training wall time and the evaluation wall time."""
    import torch

    from harness.families import FinetuneJob, family
    from harness.trial import TrialSpec, load_affinity, recipe_settings

    study = art.study
    trial = TrialSpec.from_params(params, study)
    fam = family(study.model)
    torch.manual_seed(trial.seed)
    source = fam.open_source(art)
    data = art.target_ref.open("train", augment=True).subset(art.subset(trial.shot))
    test = art.target_ref.open("val")
    grid_labels = torch.stack([torch.as_tensor(test[i]["label"]) for i in range(grid_n)])
    kept: dict[int, Any] = {}
    eval_time = 0.0

    def evaluate(ema: torch.nn.Module, step: int) -> dict[str, Any]:
        nonlocal eval_time
        start = time.perf_counter()
        m = evaluator.evaluate(lambda labels: fam.sample(ema, labels, 0, trial))
        fam.sample(ema, grid_labels, trial.seed, trial)      # the trial's sample grid
        eval_time += time.perf_counter() - start
        kept[step] = copy.deepcopy(ema)
        return {"fid": m["fid"], "kid": m["kid"], "miou": m["miou"],
                "fid_feature_net": m["feature_net"], "miou_segmenter": m["segmenter"]}

    options = recipe_settings(trial.method, trial.training, fam)
    if trial.method.baseline == "cat":
        options["affinity"] = load_affinity(art, trial)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as scratch:
        fam.finetune(FinetuneJob(art, trial, source, data, options, trial.training.iterations,
                                 "cpu", scratch, None, lambda r: None, evaluate))
    total = time.perf_counter() - start
    return kept, total, eval_time


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--study", default="studies/dataset_size.yaml")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--counts", default="16,32,64,150")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    counts = sorted(int(c) for c in args.counts.split(","))

    import os

    import numpy as np
    import ray
    import torch

    from cat_models.metrics.evaluator import Evaluator
    from cat_models.metrics.feature_net import load_feature_net
    from cat_models.metrics.fid import inception_features
    from cat_models.segmenters import load_segmenter
    from harness.families import family
    from harness.trial import TrialSpec

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # Ray starts its workers at nice 15; at 0 they keep priority over niced background jobs
    # on a shared machine, as the bare loop in this process does.
    os.environ.setdefault("RAY_worker_niceness", "0")
    study = load_study(args.study, args.overrides)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    art = prepare(study, Path(tempfile.mkdtemp(prefix="bench-eval-")) / "out")
    ray.shutdown()
    torch.set_num_threads(1)                     # a trial's thread count (cpus_per_worker 1)
    test = art.target_ref.open("val")
    segmenter = load_segmenter(art.eval_segmenter)
    net = load_feature_net(art.feature_net)
    n_eval = min(study.evaluation.n_samples, len(test))

    def evaluator(n: int, seed: int) -> Any:
        return Evaluator(test, test, segmenter, feature_net=net, n_samples=n,
                         cache_dir=art.stats_cache, seed=seed)

    size = min(study.target_sizes)
    labels = [m.label for m in study.methods][:2]
    gens: dict[str, dict[int, Any]] = {}
    print("## 1. Evaluation share of a trial\n")
    print(f"Trial: {study.training.iterations} iterations, evaluation every "
          f"{study.training.eval_every} on {n_eval} samples + a {study.evaluation.final_samples_grid}"
          "-image grid, 1 thread.\n")
    print("| method | trial wall (training + evaluation) | evaluation | share |")
    print("|---|---:|---:|---:|")
    for label in labels:
        params = {"method": label, "target_size": size, "seed": study.seeds[0]}
        kept, total, spent = finetune_keeping_generators(
            art, params, evaluator(n_eval, 0), min(study.evaluation.final_samples_grid, len(test)))
        gens[label] = kept
        print(f"| {label} | {total:.1f} s | {spent:.1f} s | {spent / total:.1%} |", flush=True)

    trial = TrialSpec.from_params({"method": labels[0], "target_size": size,
                                   "seed": study.seeds[0]}, study)
    fam = family(study.model)
    last = max(gens[labels[0]])
    ema = gens[labels[0]][last]
    batch = torch.stack([torch.as_tensor(test[i]["label"]) for i in range(n_eval)])
    with torch.no_grad():
        images = torch.cat([fam.sample(ema, b, 0, trial) for b in batch.split(8)])
    reps = 3
    t_incep, t_eval, t_gen = [], [], []
    ev = evaluator(n_eval, 0)
    for _ in range(reps):
        start = time.perf_counter()
        inception_features(images, net, 8)
        t_incep.append(time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad():
            for b in batch.split(8):
                fam.sample(ema, b, 0, trial)
        t_gen.append(time.perf_counter() - start)
        start = time.perf_counter()
        ev.evaluate(lambda lab: fam.sample(ema, lab, 0, trial))
        t_eval.append(time.perf_counter() - start)
    med = statistics.median
    print(f"\n## 2. The Inception limit ({n_eval} images of {images.shape[-1]} px, medians of "
          f"{reps})\n")
    print("| part | seconds | share of the evaluation |")
    print("|---|---:|---:|")
    for name, ts in (("Inception forward", t_incep), ("generation", t_gen),
                     ("whole evaluation", t_eval)):
        print(f"| {name} | {med(ts):.2f} | {med(ts) / med(t_eval):.0%} |")

    steps = sorted(gens[labels[0]])
    pairs = {f"{labels[0]} vs {labels[1]} at {last}": (gens[labels[0]][last],
                                                        gens[labels[1]][last])}
    if len(steps) >= 2:
        pairs[f"{labels[0]} at {steps[-2]} vs {last}"] = (gens[labels[0]][steps[-2]],
                                                          gens[labels[0]][last])
    scores: dict[str, dict[int, list[tuple[dict, dict]]]] = {k: {} for k in pairs}
    times: dict[int, list[float]] = {}
    for n in counts:
        n_real = min(n, len(test))
        for seed in range(args.seeds):
            ev = evaluator(n_real, seed)
            for name, (a, b) in pairs.items():
                # the family's sampler seeds its own noise: the seed must reach it
                start = time.perf_counter()
                ma = ev.evaluate(lambda lab, g=a, s=seed: fam.sample(g, lab, s, trial))
                times.setdefault(n_real, []).append(time.perf_counter() - start)
                mb = ev.evaluate(lambda lab, g=b, s=seed: fam.sample(g, lab, s, trial))
                scores[name].setdefault(n_real, []).append((ma, mb))
        print(f"[bench] n = {n_real}: {args.seeds} seeds done", file=sys.stderr, flush=True)
    ref_n = max(times)
    print(f"\n## 3. Rank agreement with n = {ref_n} (share of {args.seeds} noise seeds)\n")
    print("| pair | metric | " + " | ".join(f"n = {n}" for n in sorted(times)) + " |")
    print("|---|---|" + "---:|" * len(times))
    for name in pairs:
        for metric in ("fid", "kid", "miou"):
            spec = metric_spec(metric)          # the tables' units: KID ×10³, mIoU in %
            ref = np.mean([a[metric] - b[metric] for a, b in scores[name][ref_n]])
            cells = []
            for n in sorted(times):
                diffs = [spec.scale * (a[metric] - b[metric]) for a, b in scores[name][n]]
                agree = np.mean([np.sign(d) == np.sign(ref) for d in diffs])
                cells.append(f"{agree:.0%} (Δ {np.mean(diffs):+.1f} ± {np.std(diffs):.1f})")
            print(f"| {name} | {spec.label} | " + " | ".join(cells) + " |")
    print("\n| n | seconds per evaluation of one model (median) |")
    print("|---:|---:|")
    for n in sorted(times):
        print(f"| {n} | {med(times[n]):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

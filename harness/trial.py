"""One trial = one finetuning run of one method on one few-shot subset, evaluated as it trains.

`run_trial(params, artifacts, report, ...)` is plain Python: it receives the trial's parameters
(a dict from Ray Tune) and the stage artifacts, and calls `report(metrics, checkpoint_dir)` at
every evaluation. Ray is the caller (`harness.trials`), not a dependency: the same function runs
in a Tune function trainable (one worker) or in every worker of a Ray Train `TorchTrainer`
(DDP), and in a notebook with `report=print`-like callables.

Reports (paper §4.1 protocol): every `eval_every` iterations and after the last one,
`iteration`, `fid`, `kid`, `miou` (a fraction), `wall_time_s`, `done`; the last report adds
`final_*`, `best_*`, `iters_to_convergence` and the provenance (`fid_feature_net`,
`miou_segmenter`, `source_ckpt_hash`). Sample grids (rows: label map | real | generated) go to
`<trial_dir>/samples/iter_XXXXXX.png` and `final.png`.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.stages import Artifacts

Report = Callable[[dict[str, Any], str | None], None]
TRAINING_KEYS = ("iterations", "stage1_iterations", "batch_size", "lr_g", "lr_d", "freeze_d",
                 "labelmix_lambda", "ema_decay", "affinity_temperature", "affinity_top_k")
# Baseline recipes that take these options (cat_models.oasis.baselines).
TAKES_FREEZE_D = ("cat", "freezed")
TAKES_STAGE1 = ("cat", "minegan")


def palette(num_classes: int) -> torch.Tensor:
    """A fixed colour per class id (0 = unlabeled is black): uint8 [C+1, 3]."""
    gen = torch.Generator().manual_seed(1234)
    colours = torch.randint(40, 256, (num_classes + 1, 3), generator=gen, dtype=torch.uint8)
    colours[0] = 0
    return colours


def sample_grid(labels: torch.Tensor, real: torch.Tensor | None, fake: torch.Tensor,
                num_classes: int) -> np.ndarray:
    """uint8 [H', W', 3]: one column per example; rows label map | real (if given) | generated."""
    colour = palette(num_classes)[labels.clamp(0, num_classes)].permute(0, 3, 1, 2)
    rows = [colour]
    if real is not None:
        rows.append(((real.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
    rows.append(((fake.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
    pad = 2
    n, _, h, w = fake.shape
    canvas = torch.full((3, len(rows) * (h + pad) + pad, n * (w + pad) + pad), 255,
                        dtype=torch.uint8)
    for r, row in enumerate(rows):
        for i in range(n):
            y, x = pad + r * (h + pad), pad + i * (w + pad)
            canvas[:, y:y + h, x:x + w] = row[i].cpu()
    return canvas.permute(1, 2, 0).numpy()


def save_grid(path: Path, grid: np.ndarray, scale: int = 2) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(grid)
    image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(path)


def trial_settings(params: dict[str, Any], study: dict[str, Any]) -> dict[str, Any]:
    """The study's training block with this trial's searched values applied."""
    settings = dict(study["training"])
    settings.update({k: params[k] for k in TRAINING_KEYS if k in params})
    return settings


def method_spec(params: dict[str, Any], study: dict[str, Any]) -> dict[str, Any]:
    for m in study["methods"]:
        if m["label"] == params["method"]:
            return m
    raise KeyError(f"trial asks for method {params['method']!r}, which the study does not list")


def load_affinity(spec: dict[str, Any], art: Artifacts, settings: dict[str, Any],
                  size: int, seed: int):
    """A for CAT, estimated on this trial's few-shot set; None (random init, seeded by the
    trial) for 'random'."""
    if spec["baseline"] != "cat" or spec.get("affinity") in (None, "random"):
        return None
    from cat_models.affinity.matrix import AffinityMatrix
    from cat_models.affinity.normalise import normalise_affinity
    from harness.stages import affinity_key

    matrix = AffinityMatrix.load(art.affinities[affinity_key(spec["affinity"], size, seed)])
    if settings.get("affinity_temperature") or settings.get("affinity_top_k"):
        matrix = normalise_affinity(matrix, settings.get("affinity_temperature"),
                                    settings.get("affinity_top_k"))
    return matrix


def run_trial(params: dict[str, Any], art: Artifacts, report: Report,
              trial_dir: str | Path | None = None, restore: str | Path | None = None,
              device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """Finetune, evaluate and report one trial; returns the last report."""
    from cat_models.metrics.convergence import iterations_to_convergence
    from cat_models.metrics.evaluator import Evaluator
    from cat_models.oasis.finetune import finetune_oasis
    from cat_models.oasis.sampling import sample_images
    from cat_models.oasis.train import world
    from cat_models.segmenters import load_segmenter
    from harness.config import Study
    from harness.stages import oasis_config, open_source

    if threads:
        torch.set_num_threads(threads)
    study = art.study
    spec = method_spec(params, study)
    settings = trial_settings(params, study)
    seed, size = int(params["seed"]), int(params["target_size"])
    rank, _ = world()
    torch.manual_seed(seed)
    np.random.seed(seed)

    source = open_source(art) if spec["baseline"] != "scratch" else None
    cfg = source.cfg if source is not None else oasis_config(Study.model_validate(study))
    cfg = cfg.replace(lr_g=settings["lr_g"], lr_d=settings["lr_d"],
                      batch_size=settings["batch_size"],
                      ema_decay=settings.get("ema_decay") or cfg.ema_decay,
                      lambda_labelmix=settings["labelmix_lambda"],
                      amp=bool(settings.get("amp", True)))
    data = art.target_ref.open("train", augment=True).subset(art.subset(size, seed))
    test = art.target_ref.open("val")
    evaluation = study["evaluation"]
    # Only rank 0 evaluates (train_oasis calls `evaluate` there): the other DDP ranks skip
    # loading the segmenter, the Inception and the real statistics.
    evaluator = None
    if rank == 0:
        evaluator = Evaluator(test, test, load_segmenter(art.eval_segmenter, device=device),
                              feature_net=art.feature_net,
                              n_samples=min(evaluation["n_samples"], max(2, len(test))),
                              cache_dir=art.stats_cache, seed=0)
    grid_n = min(evaluation["final_samples_grid"], len(test))
    grid_labels = torch.stack([torch.as_tensor(test[i]["label"]) for i in range(grid_n)])
    grid_real = torch.stack([torch.as_tensor(test[i]["image"]) for i in range(grid_n)])
    samples = Path(trial_dir) / "samples" if trial_dir is not None and rank == 0 else None

    options = dict(spec.get("options") or {})
    if spec["baseline"] in TAKES_FREEZE_D:
        options.setdefault("freeze_d", settings["freeze_d"])
    if spec["baseline"] in TAKES_STAGE1:
        options.setdefault("stage1_iters", settings["stage1_iterations"])
    if spec["baseline"] == "cat":
        options["affinity"] = load_affinity(spec, art, settings, size, seed)

    history: list[list[float]] = []   # [iteration, fid, kid, miou] per evaluation
    restore_file = None
    if restore is not None:   # a checkpoint folder: latest.pt + the evaluations so far
        restore = Path(restore)
        restore_file = restore / "latest.pt"
        if (restore / "history.json").is_file():
            history = json.loads((restore / "history.json").read_text())
    start = time.perf_counter()
    iterations = 0 if study.get("training_free") else int(settings["iterations"])
    eval_every = int(settings["eval_every"])

    def evaluate(ema: torch.nn.Module, step: int) -> dict[str, Any]:
        def generate(labels: torch.Tensor) -> torch.Tensor:
            return sample_images(ema, labels.to(device), seed=0).cpu()

        m = evaluator.evaluate(generate)
        if samples is not None:
            fake = sample_images(ema, grid_labels.to(device), seed=seed).cpu()
            grid = sample_grid(grid_labels, grid_real, fake, test.num_classes)
            save_grid(samples / f"iter_{step:06d}.png", grid)
            if step == iterations:
                save_grid(samples / "final.png", grid)
        return {"fid": float(m["fid"]), "kid": float(m["kid"]), "miou": float(m["miou"]),
                "fid_feature_net": m["feature_net"], "miou_segmenter": m["segmenter"]}

    last: dict[str, Any] = {}

    def on_report(r: dict[str, Any]) -> None:
        step = int(r["iteration"])
        if step % eval_every and step != iterations:
            return   # loss-only reports stay local; Tune sees evaluations
        metrics = {"iteration": step, "wall_time_s": round(time.perf_counter() - start, 2),
                   "stage": int(r.get("stage", 0)), "done": step == iterations,
                   "g_total": float(r.get("g_total", math.nan)),
                   "d_total": float(r.get("d_total", math.nan))}
        if "fid" in r:   # rank 0 holds the evaluation
            metrics.update(fid=r["fid"], kid=r["kid"], miou=r["miou"])
            history.append([step, r["fid"], r["kid"], r["miou"]])
            if step == iterations:
                steps = [h[0] for h in history]
                best = min(history, key=lambda h: h[1])
                metrics.update(
                    final_fid=r["fid"], final_kid=r["kid"], final_miou=r["miou"],
                    best_fid=best[1], best_kid=min(h[2] for h in history),
                    best_miou=max(h[3] for h in history), best_iteration=best[0],
                    iters_to_convergence=iterations_to_convergence(
                        steps, [h[1] for h in history],
                        tolerance=evaluation["convergence_tolerance"]),
                    fid_feature_net=r["fid_feature_net"], miou_segmenter=r["miou_segmenter"],
                    source_ckpt_hash=art.source_hash, method=spec["label"],
                    target_size=size, seed=seed)
        last.clear()
        last.update(metrics)
        checkpoint = None
        if r.get("checkpoint"):
            checkpoint = str(Path(r["checkpoint"]).parent)
            (Path(checkpoint) / "history.json").write_text(json.dumps(history))
        report(metrics, checkpoint)

    if study.get("training_free"):
        return run_training_free(spec, art, source, evaluate, report, size, seed)

    # Checkpoints are written to a scratch folder and handed to Ray, which copies them into
    # the trial's storage (local, shared FS or cloud); rank 0 alone writes them.
    with tempfile.TemporaryDirectory(prefix="cat-trial-") as scratch:
        finetune_oasis(spec["baseline"], source, data, iterations, cfg, seed=seed,
                       device=device, checkpoint_dir=scratch if rank == 0 else None,
                       checkpoint_every=int(settings["checkpoint_every"]),
                       resume=restore_file, on_report=on_report, report_every=eval_every,
                       evaluate_fn=evaluate, eval_every=eval_every, report_all_ranks=True,
                       **options)
    return last


def run_training_free(spec: dict[str, Any], art: Artifacts, source: Any,
                      evaluate: Callable[[torch.nn.Module, int], dict[str, Any]],
                      report: Report, size: int, seed: int) -> dict[str, Any]:
    """Paper Table 3: the source generator behind A, no finetuning; one report at iteration 0.

    'random' draws A from the trial's seed (uniform, columns normalised), as CAT's random init.
    """
    from cat_models.oasis.sampling import training_free_generator

    if spec["baseline"] != "cat" or source is None:
        raise ValueError(f"training_free: method {spec['label']!r} is not CAT; a training-free "
                         "study compares affinity methods of CAT only")
    target_names = art.target_ref.open("val").class_names
    matrix = load_affinity(spec, art, trial_settings({}, art.study), size, seed)
    if matrix is None:
        rng = np.random.default_rng(seed)
        values = rng.random((source.num_classes, len(target_names)))
        matrix = values / values.sum(axis=0, keepdims=True)
    start = time.perf_counter()
    m = evaluate(training_free_generator(source, matrix), 0)
    metrics = {"iteration": 0, "wall_time_s": round(time.perf_counter() - start, 2),
               "done": True, "fid": m["fid"], "kid": m["kid"], "miou": m["miou"],
               "final_fid": m["fid"], "final_kid": m["kid"], "final_miou": m["miou"],
               "best_fid": m["fid"], "best_kid": m["kid"], "best_miou": m["miou"],
               "iters_to_convergence": 0, "fid_feature_net": m["fid_feature_net"],
               "miou_segmenter": m["miou_segmenter"], "source_ckpt_hash": art.source_hash,
               "method": spec["label"], "target_size": size, "seed": seed}
    report(metrics, None)
    return metrics

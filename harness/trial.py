"""One trial = one finetuning run of one method on one few-shot subset, evaluated as it trains.

`run_trial(params, artifacts, report, ...)` is plain Python: it receives the trial's parameters
(a dict from Ray Tune, turned into a typed `TrialSpec` at once) and the stage artifacts, and
calls `report(metrics, checkpoint_dir)` at every evaluation. Its parts, one concept each:
`TrialSpec` (what the trial is: method, few-shot set, training settings), the model family
(`harness.families`: its recipes, finetuning call, sampler and training-free transfer; the code
here never knows which family runs), `MetricsHistory` (the evaluations so far and the final
summary). Ray is the caller (`harness.trials`), not a dependency: the same function runs
in a Tune function trainable (one worker) or in every worker of a Ray Train `TorchTrainer`
(DDP), and in a notebook with `report=print`-like callables.

Reports (paper §4.1 protocol): every `eval_every` iterations and after the last one,
`iteration`, `fid`, `kid`, `miou` (a fraction), `wall_time_s`, `done`; the last report adds
`final_*`, `best_*`, `iters_to_convergence` and the provenance (`fid_feature_net`,
`miou_segmenter`, `source_ckpt_hash`). Sample grids (rows: label map | real | generated) go to
`<trial_dir>/samples/iter_XXXXXX.png` and `final.png`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from harness.analysis.metrics import (
    CLASS_IOU_REAL_PREFIX,
    class_iou_columns,
    class_iou_keys,
)
from harness.config import MethodSpec, Study, TrainingSpec
from harness.families import FinetuneJob, ModelFamily, family
from harness.stages import Artifacts, FewShotSet
from harness.stages_common import AffinityKey, eval_sample_count, floor_split

Report = Callable[[dict[str, Any], str | None], None]
Evaluate = Callable[[torch.nn.Module, int], dict[str, Any]]


def palette(num_classes: int) -> torch.Tensor:
    """A fixed colour per class id (0 = unlabeled is black): uint8 [C+1, 3]."""
    gen = torch.Generator().manual_seed(1234)
    colours = torch.randint(40, 256, (num_classes + 1, 3), generator=gen, dtype=torch.uint8)
    colours[0] = 0
    return colours


def grid_rows(with_real: bool) -> list[str]:
    """The captions of a `sample_grid`'s rows, top to bottom."""
    return ["label map", *(["real"] if with_real else []), "generated"]


def sample_grid(labels: torch.Tensor, real: torch.Tensor | None, fake: torch.Tensor,
                num_classes: int) -> np.ndarray:
    """uint8 [H', W', 3]: one column per example; rows as `grid_rows(real is not None)`."""
    def to_uint8(images: torch.Tensor) -> torch.Tensor:
        return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)

    drawn = {"label map": palette(num_classes)[labels.clamp(0, num_classes)].permute(0, 3, 1, 2),
             "generated": to_uint8(fake)}
    if real is not None:
        drawn["real"] = to_uint8(real)
    rows = [drawn[name] for name in grid_rows(real is not None)]
    pad = 2
    n, _, h, w = fake.shape
    canvas = torch.full((3, len(rows) * (h + pad) + pad, n * (w + pad) + pad), 255,
                        dtype=torch.uint8)
    for r, row in enumerate(rows):
        for i in range(n):
            y, x = pad + r * (h + pad), pad + i * (w + pad)
            canvas[:, y:y + h, x:x + w] = row[i].cpu()
    return canvas.permute(1, 2, 0).numpy()


def save_grid(path: Path, grid: np.ndarray, scale: int = 2, rows: list[str] | None = None) -> None:
    """Save a grid as PNG, scaled up; `rows` (its row captions) go into the PNG's text chunk
    `rows`, "|"-separated, where the report's composite reads them."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(grid)
    info = PngInfo()
    if rows:
        info.add_text("rows", "|".join(rows))
    image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(
        path, pnginfo=info)


@dataclass(frozen=True)
class TrialSpec:
    """What one trial is: a method of the study, a few-shot set, and the training settings
    with the trial's searched values applied."""

    method: MethodSpec
    shot: FewShotSet
    training: TrainingSpec
    settings: Any = None     # the model family's own (`ModelFamily.trial_settings`)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], study: Study) -> TrialSpec:
        return cls(method_spec(study, params["method"]),
                   FewShotSet(int(params["target_size"]), int(params["seed"])),
                   study.training.for_trial(params),
                   family(study.model).trial_settings(study, params))

    @property
    def seed(self) -> int:
        return self.shot.seed


def method_spec(study: Study, label: str) -> MethodSpec:
    for m in study.methods:
        if m.label == label:
            return m
    raise KeyError(f"trial asks for method {label!r}, which the study does not list")


def recipe_settings(method: MethodSpec, training: TrainingSpec,
                    fam: ModelFamily | None = None) -> dict[str, Any]:
    """The recipe's options: the method's own, plus the training settings its recipe declares
    (the family's `RECIPE_SETTINGS`, e.g. FreezeD depth, stage-1 length) unless the method sets
    them. `fam` defaults to OASIS."""
    fam = fam or family("oasis")
    takes = fam.recipe_options(method.baseline)
    options = {option: getattr(training, field) for option, field in fam.RECIPE_SETTINGS.items()
               if option in takes}
    return {**options, **method.options}


def load_affinity(art: Artifacts, trial: TrialSpec):
    """A for CAT, estimated on this trial's few-shot set; None (random init, seeded by the
    trial) for 'random'."""
    spec, settings = trial.method, trial.training
    if spec.baseline != "cat" or spec.affinity in (None, "random"):
        return None
    from cat_models.affinity.matrix import AffinityMatrix
    from cat_models.affinity.normalise import normalise_affinity

    key = AffinityKey(spec.affinity, None if spec.affinity == "text" else trial.shot)
    matrix = AffinityMatrix.load(art.affinities[key])
    if settings.affinity_temperature or settings.affinity_top_k:
        matrix = normalise_affinity(matrix, settings.affinity_temperature,
                                    settings.affinity_top_k)
    return matrix


# The evaluator's scalars a trial reports at every evaluation (the floor keys and miou_real are
# the same at every evaluation: real images only) and those repeated as final_<key> at the last.
EVAL_KEYS = ("fid", "kid", "kid_std", "miou", "fid_floor", "kid_floor", "kid_floor_std",
             "miou_real")
FINAL_KEYS = ("fid", "kid", "kid_std", "miou")


def per_class_keys(report: dict[str, Any]) -> list[str]:
    """The per-class IoU keys of an evaluation (`iou/<class>`, `iou_real/<class>`)."""
    return [*class_iou_columns(report), *class_iou_columns(report, CLASS_IOU_REAL_PREFIX)]


class MetricsHistory:
    """The trial's evaluations `[iteration, fid, kid, miou]`, kept with its checkpoints (so a
    restored trial's best-so-far and convergence count its earlier evaluations)."""

    FILE = "history.json"

    def __init__(self, rows: list[list[float]] | None = None) -> None:
        self.rows = rows or []

    @classmethod
    def restore(cls, folder: Path | None) -> MetricsHistory:
        path = None if folder is None else Path(folder) / cls.FILE
        return cls(json.loads(path.read_text()) if path is not None and path.is_file() else [])

    def save(self, folder: str | Path) -> None:
        (Path(folder) / self.FILE).write_text(json.dumps(self.rows))

    def add(self, step: int, fid: float, kid: float, miou: float) -> None:
        self.rows.append([step, fid, kid, miou])

    COLUMNS: ClassVar[dict[str, int]] = {"fid": 1, "kid": 2, "miou": 3}

    def summary(self, tolerance: float, metric: str = "fid") -> dict[str, Any]:
        """best_* over the evaluations so far; best_iteration and iters_to_convergence
        (paper §4.1, Fig. 4) follow `metric`, the study's ranking metric (search.metric)."""
        from cat_models.metrics.convergence import iterations_to_convergence

        col, lower = self.COLUMNS[metric], metric != "miou"
        best = (min if lower else max)(self.rows, key=lambda h: h[col])
        return {"best_fid": min(h[1] for h in self.rows),
                "best_kid": min(h[2] for h in self.rows),
                "best_miou": max(h[3] for h in self.rows), "best_iteration": best[0],
                "ranking_metric": metric,
                "iters_to_convergence": iterations_to_convergence(
                    [h[0] for h in self.rows], [h[col] for h in self.rows],
                    tolerance=tolerance, lower_is_better=lower)}


class FinalReport:
    """A finished trial's last report, kept in its trial folder (`final_report.json`).

    The trial writes it just before it sends that report. Tune records a trial as finished in
    its experiment state only every ~10 s, so a driver killed in between leaves a finished
    trial marked as running, and `--resume` would train it again from its last checkpoint
    known there. A trial start that finds this file sends the kept report again instead of
    training (`harness.trials`). Written through a temporary file and a rename, so it is whole
    or absent; an unreadable one is ignored (the trial then trains again, as without it).
    """

    FILE = "final_report.json"

    @classmethod
    def save(cls, trial_dir: str | Path, metrics: Mapping[str, Any]) -> None:
        folder = Path(trial_dir)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{cls.FILE}.tmp"
        tmp.write_text(json.dumps(dict(metrics)))
        tmp.replace(folder / cls.FILE)

    @classmethod
    def load(cls, trial_dir: str | Path | None) -> dict[str, Any] | None:
        path = None if trial_dir is None else Path(trial_dir) / cls.FILE
        if path is None or not path.is_file():
            return None
        try:
            metrics = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return metrics if isinstance(metrics, dict) and metrics.get("done") is True else None


def world_rank() -> int:
    """This process's DDP rank (0 without a process group)."""
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def run_trial(params: Mapping[str, Any], art: Artifacts, report: Report,
              trial_dir: str | Path | None = None, restore: str | Path | None = None,
              device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """Finetune, evaluate and report one trial; returns the last report."""
    from cat_models.metrics.evaluator import Evaluator
    from cat_models.segmenters import load_segmenter

    if threads:
        torch.set_num_threads(threads)
    study = art.study
    trial = TrialSpec.from_params(params, study)
    spec, seed, size = trial.method, trial.seed, trial.shot.size
    fam = family(study.model)
    rank = world_rank()

    def send(metrics: dict[str, Any], checkpoint: str | None) -> None:
        if metrics.get("done") is True and trial_dir is not None and rank == 0:
            FinalReport.save(trial_dir, metrics)
        report(metrics, checkpoint)

    torch.manual_seed(seed)
    np.random.seed(seed)

    source = fam.open_source(art) if fam.needs_source(spec.baseline) else None
    data = art.target_ref.open("train", augment=True).subset(art.subset(trial.shot))
    test = art.target_ref.open("val")
    evaluation = study.evaluation
    # Only rank 0 evaluates (the training loops call `evaluate` there): the other DDP ranks skip
    # loading the segmenter, the Inception and the real statistics.
    evaluator = None
    if rank == 0:
        evaluator = Evaluator(test, test, load_segmenter(art.eval_segmenter, device=device),
                              feature_net=art.feature_net,
                              n_samples=eval_sample_count(study, len(test)),
                              cache_dir=art.stats_cache, seed=0,
                              floor_dataset=floor_split(art.target_ref), device=device)
    grid_n = min(evaluation.final_samples_grid, len(test))
    grid_labels = torch.stack([torch.as_tensor(test[i]["label"]) for i in range(grid_n)])
    grid_real = torch.stack([torch.as_tensor(test[i]["image"]) for i in range(grid_n)])
    samples = Path(trial_dir) / "samples" if trial_dir is not None and rank == 0 else None
    captions = grid_rows(with_real=True)

    # a checkpoint folder to restore: latest.pt + the evaluations so far
    restore_file = None if restore is None else Path(restore) / "latest.pt"
    history = MetricsHistory.restore(None if restore is None else Path(restore))
    start = time.perf_counter()
    iterations = 0 if study.training_free else trial.training.iterations
    eval_every = trial.training.eval_every

    def evaluate(ema: torch.nn.Module, step: int) -> dict[str, Any]:
        def generate(labels: torch.Tensor) -> torch.Tensor:
            return fam.sample(ema, labels, 0, trial)

        m = evaluator.evaluate(generate)
        if samples is not None:
            fake = fam.sample(ema, grid_labels, seed, trial)
            grid = sample_grid(grid_labels, grid_real, fake, test.num_classes)
            save_grid(samples / f"iter_{step:06d}.png", grid, rows=captions)
            if step == iterations:
                save_grid(samples / "final.png", grid, rows=captions)
        return {**{k: float(m[k]) for k in EVAL_KEYS if k in m},
                **class_iou_keys(m["per_class_iou"]),
                **class_iou_keys(m.get("per_class_iou_real", {}), CLASS_IOU_REAL_PREFIX),
                "fid_feature_net": m["feature_net"], "miou_segmenter": m["segmenter"]}

    last: dict[str, Any] = {}

    def on_report(r: dict[str, Any]) -> None:
        step = int(r["iteration"])
        if step % eval_every and step != iterations:
            return   # loss-only reports stay local; Tune sees evaluations
        metrics = {"iteration": step, "wall_time_s": round(time.perf_counter() - start, 2),
                   "stage": int(r.get("stage", 0)), "done": step == iterations,
                   **{k: float(r.get(k, math.nan)) for k in fam.LOSS_KEYS}}
        if "fid" in r:   # rank 0 holds the evaluation
            metrics.update({k: r[k] for k in [*EVAL_KEYS, *per_class_keys(r)] if k in r})
            history.add(step, r["fid"], r["kid"], r["miou"])
            if step == iterations:
                metrics.update(
                    {f"final_{k}": r[k] for k in FINAL_KEYS if k in r},
                    **history.summary(evaluation.convergence_tolerance, study.search.metric),
                    fid_feature_net=r["fid_feature_net"], miou_segmenter=r["miou_segmenter"],
                    source_ckpt_hash=art.source_hash, method=spec.label,
                    target_size=size, seed=seed)
        last.clear()
        last.update(metrics)
        checkpoint = None
        if r.get("checkpoint"):
            checkpoint = str(Path(r["checkpoint"]).parent)
            history.save(checkpoint)
        send(metrics, checkpoint)

    if study.training_free:
        return run_training_free(trial, art, fam, source, evaluate, send)

    options = recipe_settings(spec, trial.training, fam)
    if spec.baseline == "cat":
        options["affinity"] = load_affinity(art, trial)
    # Checkpoints are written to a scratch folder and handed to Ray, which copies them into
    # the trial's storage (local, shared FS or cloud); rank 0 alone writes them.
    with tempfile.TemporaryDirectory(prefix="cat-trial-") as scratch:
        fam.finetune(FinetuneJob(art, trial, source, data, options, iterations, device,
                                 scratch if rank == 0 else None, restore_file, on_report,
                                 evaluate))
    return last


def run_training_free(trial: TrialSpec, art: Artifacts, fam: ModelFamily, source: Any,
                      evaluate: Evaluate, report: Report) -> dict[str, Any]:
    """Paper Table 3: the source generator behind A, no finetuning; one report at iteration 0.

    'random' draws A from the trial's seed (uniform, columns normalised), as CAT's random init.
    """
    spec = trial.method
    if spec.baseline != "cat" or source is None:
        raise ValueError(f"training_free: method {spec.label!r} is not CAT; a training-free "
                         "study compares affinity methods of CAT only")
    target_names = art.target_ref.open("val").class_names
    # the study's own settings: a training-free trial has nothing searched
    matrix = load_affinity(art, dataclasses.replace(trial, training=art.study.training))
    if matrix is None:
        rng = np.random.default_rng(trial.seed)
        values = rng.random((fam.source_classes(source), len(target_names)))
        matrix = values / values.sum(axis=0, keepdims=True)
    start = time.perf_counter()
    m = evaluate(fam.training_free(source, matrix, trial), 0)
    metrics = {"iteration": 0, "wall_time_s": round(time.perf_counter() - start, 2),
               "done": True, **{k: m[k] for k in [*EVAL_KEYS, *per_class_keys(m)] if k in m},
               **{f"final_{k}": m[k] for k in FINAL_KEYS if k in m},
               "best_fid": m["fid"], "best_kid": m["kid"], "best_miou": m["miou"],
               "iters_to_convergence": 0, "ranking_metric": art.study.search.metric,
               "fid_feature_net": m["fid_feature_net"],
               "miou_segmenter": m["miou_segmenter"], "source_ckpt_hash": art.source_hash,
               "method": spec.label, "target_size": trial.shot.size, "seed": trial.seed}
    report(metrics, None)
    return metrics

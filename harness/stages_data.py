"""Data stages of a study: locate/materialise datasets, validate them, sample few-shot subsets."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cat_models.data import (
    DatasetError,
    SegmentationDataset,
    kl_greedy_subset,
    label_histograms,
    load_subset,
    open_dataset,
    save_subset,
    validate_dataset,
)
from cat_models.data.synthetic import ensure_benchmark
from harness.cache import cached_stage
from harness.config import DatasetSpec, Study, StudyError


@dataclass(frozen=True)
class DatasetRef:
    """Where a dataset lives and how to open it (picklable: travels to Ray workers)."""

    kind: str                       # a layout name understood by cat_models.data.open_dataset
    root: str
    resolution: int | tuple[int, int]
    name: str

    def open(self, split: str = "train", augment: bool = False) -> SegmentationDataset:
        return open_dataset(self.kind, self.root, split, self.resolution, augment=augment)


def resolve_dataset(spec: DatasetSpec, study: Study, cache: Path, role: str) -> DatasetRef:
    if spec.kind.startswith("synthetic"):
        b = study.benchmark
        bench = ensure_benchmark(cache / "synthetic", b.resolution, b.seed, b.n_source,
                                 b.n_target)
        root = bench.source_root if spec.kind == "synthetic_source" else bench.target_root
        return DatasetRef("folder", str(root), study.resolution, spec.kind)
    return DatasetRef(spec.kind, str(spec.root), study.resolution, f"{spec.kind}:{spec.root}")


def stage_datasets(study: Study, cache: Path, origin: str,
                   log: Callable[[str], None] = print) -> tuple[DatasetRef, DatasetRef]:
    """Materialise (for the embedded benchmark) and validate source and target datasets.

    Validation reads every file once, so a broken dataset fails here, before any training;
    the result is cached per dataset so later runs skip the scan.
    """
    refs = []
    for role, spec in (("source", study.source.dataset), ("target", study.target.dataset)):
        try:
            ref = resolve_dataset(spec, study, cache, role)

            def build(out: Path, ref: DatasetRef = ref) -> None:
                summary = {}
                for split in ("train", "val"):
                    ds = ref.open(split)
                    validate_dataset(ds, progress=True)
                    summary[split] = len(ds)
                summary["class_names"] = ds.class_names
                (out / "summary.json").write_text(json.dumps(summary, indent=1))

            cached_stage(cache, f"dataset-{role}", {"ref": ref.__dict__}, build, log)
        except DatasetError as err:
            raise StudyError(f"{origin}: {role}.dataset: {err}") from None
        refs.append(ref)
    return refs[0], refs[1]


def subset_inputs(study: Study, target: DatasetRef) -> dict:
    return {"ref": target.__dict__, "sizes": sorted(study.target_sizes),
            "seeds": sorted(study.seeds)}


def stage_subsets(study: Study, target: DatasetRef, cache: Path, origin: str,
                  log: Callable[[str], None] = print) -> dict[tuple[int, int], list[int]]:
    """Few-shot subsets of the target training split per (size, seed), paper §4.1."""
    pool = target.open("train")
    too_big = [s for s in study.target_sizes if s > len(pool)]
    if too_big:
        raise StudyError(f"{origin}: target_sizes: {too_big} exceed the {len(pool)} images of "
                         f"the target training split ({target.root})")
    inputs = subset_inputs(study, target)

    def build(out: Path) -> None:
        hist = label_histograms(pool, progress=True)
        for seed in study.seeds:
            # greedy runs pass through every smaller size: one run per seed gives nested sets
            order = kl_greedy_subset(hist, max(study.target_sizes), seed)
            for size in study.target_sizes:
                save_subset(out / f"size{size}-seed{seed}.json", order[:size],
                            seed=seed, dataset=target.name, split="train")

    result = cached_stage(cache, "subsets", inputs, build, log)
    return {(size, seed): load_subset(result.path / f"size{size}-seed{seed}.json")
            for size in study.target_sizes for seed in study.seeds}

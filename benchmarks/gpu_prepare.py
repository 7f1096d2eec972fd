"""Build the main job's cached stages into a folder that can travel to a GPU machine, for
`benchmarks/gpu_check.py --trial`.

    python benchmarks/gpu_prepare.py [--study studies/dataset_size.yaml] [--cache .devcache]

Runs the stages of the study (datasets, subsets, source model, evaluation segmenter, real
statistics, affinities) on this machine with a local Ray, exactly as `harness.run` does, then
copies what a trial reads (the target dataset, the source model, the evaluation segmenter, the
affinity files) to `--carry` (default `.devcarry`, ~10 MB) with the `Artifacts` a trial
receives pickled beside them (`artifacts.pkl`, every path relative to that folder). The
Inception's real statistics stay behind: they are 2048x2048 matrices per split, and the GPU
machine computes its own with the feature network it has.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def map_paths(art, fn):
    """`art` with `fn` applied to every path it holds (the datasets' roots, the checkpoints,
    the statistics folder, the affinity files)."""
    return dataclasses.replace(
        art,
        source_ref=dataclasses.replace(art.source_ref, root=fn(art.source_ref.root)),
        target_ref=dataclasses.replace(art.target_ref, root=fn(art.target_ref.root)),
        source_checkpoint=fn(art.source_checkpoint), eval_segmenter=fn(art.eval_segmenter),
        stats_cache=fn(art.stats_cache),
        affinities={k: fn(v) for k, v in art.affinities.items()})


def relative(art, cache: Path):
    """`art` with every path under `cache` made relative to it (`gpu_check.rebase` undoes it)."""
    def rel(path: str) -> str:
        p = Path(path).resolve()
        return str(p.relative_to(cache)) if p.is_relative_to(cache) else path

    return map_paths(art, rel)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--study", default="studies/dataset_size.yaml")
    p.add_argument("--cache", default=str(REPO / ".devcache"))
    p.add_argument("--carry", default=str(REPO / ".devcarry"))
    args = p.parse_args()
    cache = Path(args.cache).resolve()
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    import ray

    from harness.config import load_study
    from harness.stages import prepare_artifacts, stage_datasets, stage_subsets

    study = load_study(args.study, [f"cache_dir={cache}"])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    try:
        source, target = stage_datasets(study, cache, args.study, print)
        subsets = stage_subsets(study, target, cache, args.study, print)
        art = prepare_artifacts(study, source, target, subsets, cache, cache / "out", print,
                                ray.cluster_resources())
    finally:
        ray.shutdown()
    carry = Path(args.carry).resolve()
    shutil.rmtree(carry, ignore_errors=True)
    rel = relative(art, cache)
    wanted = [rel.target_ref.root, rel.source_checkpoint, rel.eval_segmenter,
              *rel.affinities.values()]
    for path in wanted:
        src, dst = cache / path, carry / path
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    for marker in {Path(p).parents[0] for p in wanted[1:]}:   # stage markers beside files
        for f in (cache / marker).glob("*.json"):
            shutil.copy2(f, carry / marker / f.name)
    with open(carry / "artifacts.pkl", "wb") as f:
        pickle.dump(rel, f)
    print(f"artifacts: {carry / 'artifacts.pkl'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

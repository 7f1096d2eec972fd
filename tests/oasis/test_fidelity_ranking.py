"""benchmarks/fidelity_common.py ranks the combination's tie-break as a harness trial does:
by training-free FID on the few-shot set, not on the test split it reports."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np

from tests.conftest import load_benchmark_script

BASES = ("text", "segmentation", "features")


def _bench(fc, tmp_path, monkeypatch, few_shot_fid, test_fid):
    from cat_models import segmenters
    from cat_models.affinity import registry
    from harness import stages_affinity

    bench = object.__new__(fc.Bench)
    bench.cache, bench.size, bench.seed = tmp_path, 25, 0
    bench.segmenter_stage, bench.target_kind = "segmenter-target", "synthetic_target"
    bench.source_segmenter = tmp_path / "source_segmenter.pt"
    bench.subset = SimpleNamespace(name="few-shot set")
    bench.test = SimpleNamespace(name="test split", class_names=["a", "b"])
    bench.source_train = SimpleNamespace(class_names=["x", "y", "z"])
    bench.source = "source model"
    bench.training_free = lambda matrix: {"fid": test_fid[matrix.method]}
    monkeypatch.setattr(segmenters, "load_segmenter", lambda path: f"segmenter {path.name}")
    bench.evaluator = SimpleNamespace(segmenter="segmenter segmenter.pt")   # the test split's
    seen = {}

    def scores(subset, segmenter, matrices, make_generator, sample, **kw):
        seen.update(subset=subset, segmenter=segmenter, methods=sorted(matrices))
        return {m: {"fid": few_shot_fid[m], "miou": 0.5} for m in matrices}

    def estimate(method, inputs, **options):
        seen.setdefault("estimated", []).append((method, options.get("fid_ranking")))
        return SimpleNamespace(method=method, values=np.ones((3, 2)), save=lambda p: p)

    monkeypatch.setattr(stages_affinity, "few_shot_scores", scores)
    monkeypatch.setattr(registry, "estimate_affinity", estimate)
    return bench, seen


def test_the_tie_break_follows_the_few_shot_set_not_the_test_split(tmp_path, monkeypatch):
    fc = load_benchmark_script("fidelity_common")
    # the test split would rank text first; the few-shot set ranks features first
    bench, seen = _bench(fc, tmp_path, monkeypatch,
                         few_shot_fid={"text": 30.0, "segmentation": 20.0, "features": 10.0},
                         test_fid={"text": 1.0, "segmentation": 2.0, "features": 3.0})
    bench.affinities(["combination"])
    assert seen["subset"].name == "few-shot set" and seen["methods"] == sorted(BASES)
    assert seen["segmenter"] == "segmenter segmenter.pt"      # the evaluation segmenter
    assert ("combination", ["features", "segmentation", "text"]) in seen["estimated"]
    assert bench.ranking == ["features", "segmentation", "text"]


def test_a_stored_set_keeps_its_ranking_and_old_stores_are_not_reused(tmp_path, monkeypatch):
    fc = load_benchmark_script("fidelity_common")
    bench, seen = _bench(fc, tmp_path, monkeypatch,
                         few_shot_fid={"text": 3.0, "segmentation": 1.0, "features": 2.0},
                         test_fid=dict.fromkeys(BASES, 0.0))
    store = tmp_path / "store"
    # a folder of the old naming (tie-break ranked on the test split) is not read
    (store / "size25-seed0").mkdir(parents=True)
    folder = store / "size25-seed0-fewshot"
    for m in (*BASES, "combination"):
        (folder / f"{m}.npy").parent.mkdir(parents=True, exist_ok=True)
        (folder / f"{m}.npy").write_bytes(b"")
    from cat_models.affinity import matrix

    monkeypatch.setattr(matrix.AffinityMatrix, "load", classmethod(lambda cls, p: p.stem))
    # the order the stored combination was voted with, as AffinityMatrix.save records it
    (folder / "combination.json").write_text(json.dumps(
        {"method": "combination",
         "provenance": {"fid_ranking": ["segmentation", "features", "text"]}}))
    out = bench.affinities(["combination"], store)
    assert out["combination"] == "combination" and "estimated" not in seen
    assert bench.ranking == ["segmentation", "features", "text"]

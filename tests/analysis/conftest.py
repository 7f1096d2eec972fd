"""A synthetic study folder in the harness's on-disk format, with known metric values.

FID of a trial = FID_BASE[method][size] + (seed - 1) * FID_SPREAD, so over seeds 0, 1, 2 the
mean is FID_BASE and the sample std is exactly FID_SPREAD; mIoU likewise (stored as a fraction).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

METHODS = {   # label -> study.yaml method entry
    "cat-combination": {"baseline": "cat", "affinity": "combination",
                        "options": {"two_stage": True, "residual": True, "freeze_d": 3}},
    "cat-random": {"baseline": "cat", "affinity": "random",
                   "options": {"two_stage": True, "residual": True, "freeze_d": 3}},
    "freezed": {"baseline": "freezed", "affinity": None,
                "options": {"two_stage": False, "residual": False, "freeze_d": 3}},
}
SIZES = (25, 100)
SEEDS = (0, 1, 2)
FID_BASE = {"cat-combination": {25: 60.0, 100: 40.0}, "cat-random": {25: 90.0, 100: 55.0},
            "freezed": {25: 100.0, 100: 66.0}}
MIOU_BASE = {"cat-combination": {25: 0.25, 100: 0.314}, "cat-random": {25: 0.15, 100: 0.30},
             "freezed": {25: 0.12, 100: 0.259}}
FID_SPREAD = 2.0
MIOU_SPREAD = 0.01
ITERS = {"cat-combination": 300, "cat-random": 500, "freezed": 600}
SOURCE = ["sky", "grass", "water", "road"]
TARGET = ["sea", "lawn", "street"]


def trial_rows(method: str, size: int, seed: int) -> list[dict]:
    """Two evaluations then the final report (with final_*, best_*, provenance, done)."""
    # methods a test declares itself get neutral numbers
    fid = FID_BASE.get(method, {}).get(size, 50.0) + (seed - 1) * FID_SPREAD
    miou = MIOU_BASE.get(method, {}).get(size, 0.2) + (seed - 1) * MIOU_SPREAD
    rows = [{"iteration": 100, "fid": fid + 30, "kid": 0.03, "miou": miou - 0.05,
             "wall_time_s": 10.0, "done": False},
            {"iteration": 200, "fid": fid + 10, "kid": 0.02, "miou": miou - 0.02,
             "wall_time_s": 20.0, "done": False}]
    rows.append({"iteration": 300, "fid": fid, "kid": 0.01, "miou": miou, "wall_time_s": 30.0,
                 "done": True, "final_fid": fid, "final_miou": miou,
                 "best_fid": fid - 1, "best_miou": miou + 0.001,
                 "iters_to_convergence": ITERS.get(method, 400) + 10 * seed,
                 "fid_feature_net": "inception-test", "miou_segmenter": "small-seg",
                 "source_ckpt_hash": "abc123"})
    return rows


def write_trial(exp: Path, i: int, params: dict, rows: list[dict], sample: bool) -> Path:
    d = exp / f"train_{i:05d}_{params['method']}_s{params['target_size']}_seed{params['seed']}"
    d.mkdir(parents=True)
    (d / "params.json").write_text(json.dumps(params, indent=2))
    (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if sample:
        (d / "samples").mkdir()
        shade = 40 + 60 * (list(METHODS).index(params["method"])
                           if params["method"] in METHODS else 3)
        Image.new("RGB", (96, 32), (shade, 0, 0)).save(d / "samples" / "iter_000100.png")
        Image.new("RGB", (96, 32), (0, shade, 0)).save(d / "samples" / "final.png")
    return d


def write_study(root: Path, name: str = "coco2ade", source: str = "coco_stuff",
                target: str = "ade20k", methods: dict | None = None,
                training_free: bool = False, fid_offset: float = 0.0) -> Path:
    methods = methods or METHODS
    study = root / name
    exp = study / "tune"
    config = {"name": name, "description": "synthetic test study", "model": "oasis",
              "source": {"dataset": {"kind": source}}, "target": {"dataset": {"kind": target}},
              "training_free": training_free, "target_sizes": list(SIZES),
              "seeds": list(SEEDS), "axes": ["method", "target_size", "seed"],
              "methods": [{"label": k, **v} for k, v in methods.items()]}
    study.mkdir(parents=True)
    (study / "study.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    i = 0
    for method, spec in methods.items():
        for size in SIZES:
            for seed in SEEDS:
                params = {"method": method, "affinity": spec["affinity"], "target_size": size,
                          "seed": seed, "lr_g": 1e-4}
                rows = trial_rows(method, size, seed)
                if training_free:  # one evaluation of the transferred model, no training
                    rows = [{**rows[-1], "iteration": 0, "wall_time_s": 5.0,
                             "iters_to_convergence": None}]
                for r in rows:
                    for k in ("fid", "final_fid", "best_fid"):
                        if k in r:
                            r[k] += fid_offset
                write_trial(exp, i, params, rows, sample=seed == 0)
                i += 1
    values = np.array([[0.7, 0.1, 0.0], [0.1, 0.8, 0.1], [0.2, 0.05, 0.1], [0.0, 0.05, 0.8]])
    (study / "affinities").mkdir()
    np.save(study / "affinities" / "combination.npy", values)
    lines = ["source \\ target," + ",".join(TARGET)]
    lines += [f"{s}," + ",".join(repr(float(v)) for v in row) for s, row in zip(SOURCE, values)]
    (study / "affinities" / "combination.csv").write_text("\n".join(lines) + "\n")
    return study


def trial_dir_of(study: Path, method: str, size: int, seed: int) -> Path:
    """The folder `write_study` made for one (method, size, seed)."""
    (found,) = (study / "tune").glob(f"train_*_{method}_s{size}_seed{seed}")
    return found


def interrupt_trial(trial: Path, keep: int = 2, torn: bool = True) -> None:
    """Keep the first `keep` reports (no final row) and, like a killed writer, half a line."""
    lines = (trial / "result.json").read_text().splitlines(keepends=True)[:keep]
    tail = '{"iteration": 300, "fid": 12' if torn else ""
    (trial / "result.json").write_text("".join(lines) + tail)


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    return write_study(tmp_path)


@pytest.fixture(scope="session")
def analyzed(tmp_path_factory: pytest.TempPathFactory):
    """One full analysis of the synthetic study, shared by the read-only output tests."""
    from harness.analysis import analyze_study

    study = write_study(tmp_path_factory.mktemp("analyzed"))
    return study, analyze_study(study, log=None)

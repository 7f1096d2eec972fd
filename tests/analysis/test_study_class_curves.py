"""benchmarks/study_class_curves.py: a study's curves and final table with named classes apart."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import load_benchmark_script


@pytest.fixture(scope="module")
def scc():
    return load_benchmark_script("study_class_curves")


def _steps(study: Path, rows: list[dict]) -> Path:
    (study / "analysis").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(study / "analysis" / "results_steps.csv", index=False)
    return study


def _row(method: str, seed: int, iteration: int, fid: float, river: float) -> dict:
    return {"method": method, "seed": seed, "iteration": iteration, "fid": fid, "kid": 0.05,
            "miou": 0.4, "iou/river": river, "iou/roof": river / 2, "iou/canopy": 0.6,
            "iou/dune": float("nan")}


def test_named_classes_apart_pooled_over_seeds(tmp_path, scc, capsys):
    tuned = _steps(tmp_path / "tuned", [
        _row("cat", 0, 100, 300.0, 0.8), _row("cat", 1, 100, 310.0, 0.6),
        _row("cat", 0, 200, 280.0, 0.8), _row("cat", 1, 200, 290.0, 0.4),
        _row("no-cat", 0, 200, 330.0, 0.0), _row("no-cat", 1, 200, 350.0, 0.1)])
    free = _steps(tmp_path / "free", [_row("cat", 0, 0, 320.0, 0.9), _row("cat", 1, 0, 324.0, 0.9)])
    frame = scc.steps_frame(tuned, ["river", "roof"])
    first = frame.iloc[0]
    assert first["iou_named"] == pytest.approx(0.6)       # (0.8 + 0.4) / 2
    assert first["iou_other"] == pytest.approx(0.6)       # canopy; dune has no value
    png = tmp_path / "curves.png"
    assert scc.main([str(tuned), "--classes", "river,roof", "--training-free", str(free),
                     "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert png.is_file()
    assert "| cat, training-free | 0 | 322.0 ± 2.8 |" in out
    assert "| cat | 200 | 285.0 ± 7.1 | 50.0 ± 0.0 | 40.0 ± 0.0 | 45.0 ± 21.2 |" in out
    assert "| no-cat | 200 | 340.0 ± 14.1 |" in out
    with pytest.raises(SystemExit, match=r"--classes: \['lake'\] have no IoU column"):
        scc.main([str(tuned), "--classes", "lake"])


def test_one_target_size_read_when_the_study_has_several(tmp_path, scc, capsys):
    rows = [dict(_row("cat", 0, 100, fid, 0.5), target_size=size)
            for size, fid in ((25, 300.0), (400, 250.0))]
    study = _steps(tmp_path / "sizes", rows)
    with pytest.raises(SystemExit, match=r"target sizes \[25, 400\]: pick one with --size"):
        scc.main([str(study), "--classes", "river"])
    with pytest.raises(SystemExit, match=r"--size 50: .* has target sizes \[25, 400\]"):
        scc.main([str(study), "--classes", "river", "--size", "50"])
    assert list(scc.steps_frame(study, ["river"], 400)["fid"]) == [250.0]
    assert scc.main([str(study), "--classes", "river", "--size", "25"]) == 0
    assert "| cat | 100 | 300.0 |" in capsys.readouterr().out

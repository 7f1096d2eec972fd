"""benchmarks/fidelity_checks.py: the issue's checks over seeds, from two studies' result CSVs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.analysis.conftest import write_trial
from tests.conftest import load_benchmark_script


@pytest.fixture(scope="module")
def fc():
    return load_benchmark_script("fidelity_checks")


def _study(root: Path, rows: list[tuple[str, int, int, float, float, float]]) -> Path:
    """A study folder in the harness's format: one finished trial per
    (method, size, seed, fid, kid, miou)."""
    root.mkdir(parents=True)
    (root / "study.yaml").write_text(yaml.safe_dump(
        {"name": root.name, "axes": ["method", "target_size", "seed"],
         "methods": [{"label": m} for m in dict.fromkeys(r[0] for r in rows)]}))
    for i, (m, size, seed, fid, kid, miou) in enumerate(rows):
        write_trial(root / "tune", i, {"method": m, "target_size": size, "seed": seed},
                    [{"iteration": 300, "done": True, "fid": fid, "kid": kid, "miou": miou,
                      "final_fid": fid, "final_kid": kid, "final_miou": miou}], sample=False)
    return root


def _tables(fc, tmp_path, cat_fid_at_400):
    fine, free = [], []
    for seed, jitter in enumerate((-1.0, 0.0, 1.0)):
        for size, cat_fid, rand_fid in ((25, 300.0, 340.0), (400, cat_fid_at_400, 320.0)):
            fine += [("cat", size, seed, cat_fid + jitter, 0.20, 0.70 + jitter / 100),
                     ("rand", size, seed, rand_fid + 5 * jitter, 0.30, 0.45)]
            free += [("free-cat", size, seed, 310.0 + jitter, 0.15, 0.60),
                     ("free-rand", size, seed, 360.0, 0.40, 0.02)]
    a = fc.summary(_study(tmp_path / "fine", fine), {"cat": "cat", "random": "rand"})
    b = fc.summary(_study(tmp_path / "free", free), {"free_cat": "free-cat",
                                                    "free_random": "free-rand"})
    return pd.concat([a, b])


def test_checks_follow_means_stds_and_direction(fc, tmp_path):
    table = _tables(fc, tmp_path, cat_fid_at_400=290.0)
    fid = table[(table.role == "random") & (table["size"] == 25) & (table.metric == "FID")]
    assert fid["mean"].item() == pytest.approx(340.0) and fid["std"].item() == pytest.approx(5.0)
    out = fc.checks(table)
    # FID 300 ± 1 vs free 310 ± 1 and random 340 ± 5: apart; KID 200 vs free 150: worse
    assert out["a"][25]["FID"] == {"vs_training_free": True, "vs_random": True}
    assert out["a"][25]["KID×10³"] == {"vs_training_free": False, "vs_random": True}
    assert out["a"][25]["mIoU %"]["vs_training_free"] is True
    assert out["b"]["random_falls"] is True
    assert out["b"]["cat_gain"] == {25: pytest.approx(40.0), 400: pytest.approx(30.0)}
    assert out["b"]["gain_larger_at_smallest"] is True
    assert out["c"][25] == {"ratio": pytest.approx(30.0), "holds": True}


def test_overlapping_intervals_do_not_count_as_a_win(fc, tmp_path):
    # CAT 316 ± 1 vs random 320 ± 5 at 400: better mean, intervals overlap
    out = fc.checks(_tables(fc, tmp_path, cat_fid_at_400=316.0))
    assert out["a"][400]["FID"]["vs_random"] is False
    assert out["b"]["gain_larger_at_smallest"] is True  # 40 at 25 against 4 at 400


def test_a_missing_method_is_named(fc, tmp_path):
    root = _study(tmp_path / "s", [("cat", 25, 0, 300.0, 0.2, 0.7)])
    with pytest.raises(SystemExit, match="no finished trial of method 'no-cat'.*'cat'"):
        fc.summary(root, {"random": "no-cat"})


def test_studies_pool_over_folders_and_a_run_counts_once(fc, tmp_path):
    seed0 = _study(tmp_path / "s0", [("cat", 25, 0, 300.0, 0.2, 0.7),
                                     ("rand", 25, 0, 340.0, 0.3, 0.4)])
    seeds12 = _study(tmp_path / "s12", [("cat", 25, s, 302.0 + s, 0.2, 0.7) for s in (1, 2)]
                     + [("rand", 25, s, 330.0, 0.3, 0.4) for s in (1, 2)])
    table = fc.summary([seed0, seeds12], {"cat": "cat", "random": "rand"})
    fid = table[(table.role == "cat") & (table.metric == "FID")].iloc[0]
    assert fid["n"] == 3 and fid["mean"] == pytest.approx((300.0 + 303.0 + 304.0) / 3)
    again = _study(tmp_path / "again", [("cat", 25, 0, 299.0, 0.2, 0.7)])
    with pytest.raises(SystemExit, match="'cat', size 25, seed 0 is in more than one folder"):
        fc.summary([seed0, again], {"cat": "cat"})

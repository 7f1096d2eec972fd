"""benchmarks/fidelity_checks.py: the issue's checks over seeds, from two studies' result CSVs or from
fidelity_finetune.py rows."""

from __future__ import annotations

import json
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


def _rows(path: Path, runs: list[tuple], **setting) -> Path:
    """fidelity_finetune.py rows: one per (affinity, size, seed, [(iteration, fid, kid, miou)])."""
    base = {"variant": "paper", "target": "synthetic_target", "source_iterations": 6000,
            "freeze_d": 0, **setting}
    lines = [json.dumps({**base, "affinity": a, "size": size, "seed": seed,
                         "curve": [{"iteration": it, "fid": f, "kid": k, "miou": m}
                                   for it, f, k, m in curve]})
             for a, size, seed, curve in runs]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_rows_give_the_roles_from_the_training_free_and_the_last_evaluation(fc, tmp_path):
    runs = []
    for seed in (0, 1):
        for size in (25, 400):
            runs.append(("combination", size, seed,
                         [(-1, 200.0, 0.10, 0.60), (0, 205.0, 0.11, 0.58),
                          (300, 150.0 + seed, 0.05, 0.80), (600, 170.0 + 2 * seed, 0.07, 0.81)]))
            runs.append(("random", size, seed,
                         [(-1, 300.0 + seed, 0.30, 0.02), (0, 301.0, 0.31, 0.02),
                          (300, 190.0, 0.09, 0.70), (600, 160.0 + size / 100, 0.06, 0.80)]))
    table = fc.rows_summary([_rows(tmp_path / "r.jsonl", runs)])

    def mean(role, size, metric="FID"):
        cell = table[(table.role == role) & (table["size"] == size) & (table.metric == metric)]
        return cell["mean"].item(), cell["std"].item()

    assert mean("free_cat", 25) == (200.0, 0.0)                 # iteration -1, not 0
    assert mean("cat", 25) == pytest.approx((171.0, 2 ** 0.5))  # the last evaluation (600)
    assert mean("free_random", 400)[0] == pytest.approx(300.5)
    assert mean("random", 400) == (164.0, 0.0)
    out = fc.checks(table)
    # CAT 171 ± 1.4 at the end is worse than random A's 160.25: no win, a negative gain
    assert out["a"][25]["FID"] == {"vs_training_free": True, "vs_random": False}
    assert out["b"]["cat_gain"][25] == pytest.approx(160.25 - 171.0)
    assert out["c"][25] == {"ratio": pytest.approx(30.0), "holds": True}
    assert "(b) random A's FID falls with size: no" in fc.verdicts(out)


def test_rows_of_two_experiments_or_without_random_are_refused(fc, tmp_path):
    curve = [(-1, 200.0, 0.1, 0.6), (300, 150.0, 0.05, 0.8)]
    a = _rows(tmp_path / "a.jsonl", [("combination", 25, 0, curve), ("random", 25, 0, curve)])
    b = _rows(tmp_path / "b.jsonl", [("combination", 25, 1, curve), ("random", 25, 1, curve)],
              target="synthetic_aerial")
    with pytest.raises(SystemExit, match="more than one experiment"):
        fc.rows_summary([a, b])
    only_cat = _rows(tmp_path / "c.jsonl", [("combination", 25, 0, curve)])
    with pytest.raises(SystemExit, match="no 'random' rows"):
        fc.rows_summary([only_cat])


def test_cat_rows_replace_the_combination_and_keep_random_a(fc, tmp_path):
    old = [(-1, 200.0, 0.1, 0.6), (300, 190.0, 0.09, 0.7)]
    rerun = [(-1, 180.0, 0.08, 0.65), (300, 150.0, 0.05, 0.8)]
    random_a = [(-1, 300.0, 0.3, 0.02), (300, 170.0, 0.07, 0.75)]
    rows = _rows(tmp_path / "rows.jsonl", [("combination", 25, 0, old),
                                           ("random", 25, 0, random_a),
                                           ("combination", 400, 0, old),
                                           ("random", 400, 0, random_a)])
    cat = _rows(tmp_path / "cat.jsonl", [("combination", 25, 0, rerun)],
                variant="paper, few-shot tie-break")
    table = fc.rows_summary([rows], [cat])

    def fid(role):
        return table[(table.role == role) & (table.metric == "FID")]["mean"].item()

    # the rerun covers size 25 only: size 400 leaves the table rather than mixing matrices
    assert set(table["size"]) == {25}
    assert (fid("cat"), fid("free_cat"), fid("random")) == (150.0, 180.0, 170.0)
    other_source = _rows(tmp_path / "other.jsonl", [("combination", 25, 0, rerun)],
                         source_iterations=1500)
    with pytest.raises(SystemExit, match="more than one experiment"):
        fc.rows_summary([rows], [other_source])


def _budget_runs() -> list[tuple]:
    """Three seeds at sizes 25 and 400: at 300 iterations CAT beats its start and random A on
    every metric with the intervals apart; at 600 random A has caught up (and at 400 passed)."""
    runs = []
    for seed, j in enumerate((-1.0, 0.0, 1.0)):
        for size in (25, 400):
            runs.append(("combination", size, seed,
                         [(-1, 200.0 + j, 0.10, 0.60), (300, 180.0 + j, 0.08, 0.75 + j / 100),
                          (600, 175.0 + j, 0.07, 0.78 + j / 100)]))
            late = 176.0 if size == 25 else 160.0
            runs.append(("random", size, seed,
                         [(-1, 300.0 + j, 0.30, 0.02), (300, 230.0 + j, 0.15, 0.40),
                          (600, late + 3 * j, 0.07, 0.78)]))
    return runs


def test_at_reads_the_runs_at_a_shorter_budget(fc, tmp_path):
    rows = _rows(tmp_path / "r.jsonl", _budget_runs())

    def fid(table, role, size):
        return table[(table.role == role) & (table["size"] == size)
                     & (table.metric == "FID")]["mean"].item()

    at300, last = fc.rows_summary([rows], at=300), fc.rows_summary([rows])
    assert (fid(at300, "cat", 25), fid(at300, "random", 400)) == (180.0, 230.0)
    assert (fid(last, "cat", 25), fid(last, "random", 400)) == (175.0, 160.0)
    assert fid(at300, "free_cat", 25) == fid(last, "free_cat", 25) == 200.0   # still -1
    with pytest.raises(SystemExit, match=r"size 25, seed 0 was not evaluated at iteration 450 "
                                         r"\(it was at \[300, 600\]\)"):
        fc.rows_summary([rows], at=450)


def test_window_marks_the_budgets_where_check_a_holds(fc, tmp_path):
    rows = _rows(tmp_path / "r.jsonl", _budget_runs())
    frame = fc.window([rows])
    assert frame["iteration"].unique().tolist() == [300, 600]      # -1 is not a budget
    first = frame[frame.iteration == 300]
    assert first["holds"].all() and (first.vs_training_free == 3).all()
    late = frame[frame.iteration == 600].set_index("size")
    # at 600: CAT 175 ± 1 vs random A 176 ± 3 (25) and 160 ± 3 (400): no FID win either way
    assert not late["holds"].any() and late.loc[400, "cat_gain_fid"] == pytest.approx(-15.0)
    assert late.loc[25, "vs_training_free"] == 3
    table = fc.window_markdown(frame)
    assert "| 300 | 3/3 ✓ (+50.0) | 3/3 ✓ (+50.0) |" in table
    assert "| 600 | 3/" in table and "✓" not in table.splitlines()[-1]


def test_window_keeps_to_the_evaluations_every_run_has(fc, tmp_path):
    runs = _budget_runs()
    cat_rerun = [(a, size, seed, [c for c in curve if c[0] != 600])
                 for a, size, seed, curve in runs if a == "combination"]
    rows = _rows(tmp_path / "r.jsonl", runs)
    cat = _rows(tmp_path / "c.jsonl", cat_rerun, variant="paper, few-shot tie-break")
    assert fc.common_evaluations([rows], [cat]) == [300]
    assert fc.window([rows], [cat])["iteration"].unique().tolist() == [300]

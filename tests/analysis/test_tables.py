"""Paper-shaped tables: values, ± std, bold best, ✓/✗ switches, and their three renderings."""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest

from harness.analysis import build_table, load_studies, load_study, study_tables, to_csv, to_latex
from harness.analysis import to_markdown as md
from tests.analysis.conftest import (
    FID_BASE,
    FID_SPREAD,
    ITERS,
    METHODS,
    MIOU_BASE,
    MIOU_SPREAD,
    interrupt_trial,
    trial_dir_of,
    write_study,
)

G25, G100 = "COCO→ADE · 25 images", "COCO→ADE · 100 images"


@pytest.fixture
def tables(study_dir):
    return study_tables(load_study(study_dir))


def test_main_table_cells_are_mean_and_sample_std_over_seeds(tables):
    table = tables["main"]
    assert [r["method"] for r in table.rows] == list(METHODS)
    assert table.groups == [G25, G100]
    for i, method in enumerate(METHODS):
        for group, size in ((G25, 25), (G100, 100)):
            fid = table.cell(i, "fid", group)
            assert fid.mean == pytest.approx(FID_BASE[method][size])
            assert fid.std == pytest.approx(FID_SPREAD)
            assert fid.n == 3
            miou = table.cell(i, "miou", group)  # stored as a fraction, shown in percent
            assert miou.mean == pytest.approx(100 * MIOU_BASE[method][size])
            assert miou.std == pytest.approx(100 * MIOU_SPREAD)


def test_training_table_has_convergence_iterations(tables):
    table = tables["training"]
    assert [m.name for m in table.metrics] == ["best_fid", "iters_to_convergence",
                                               "wall_time_s"]
    cell = table.cell(1, "iters_to_convergence", G100)
    assert cell.mean == pytest.approx(ITERS["cat-random"] + 10)  # seeds 0,1,2 add 0,10,20
    assert cell.std == pytest.approx(10.0)


def test_markdown_rows_bold_the_best_and_mark_switches(tables):
    text = md(tables["main"])
    header = text.splitlines()[2]
    assert header == (f"| Method | 2 stages | Resid. | CAT | {G25} ↓FID | {G25} ↓KID×10³ | "
                      f"{G25} ↑mIoU | {G100} ↓FID | {G100} ↓KID×10³ | {G100} ↑mIoU |")
    # every trial ends at KID 0.01: a three-way tie, all bold
    kid = "**10.00 ± 0.00**"
    assert (f"| cat-combination | ✓ | ✓ | ✓ | **60.0 ± 2.0** | {kid} | **25.0 ± 1.0** | "
            f"**40.0 ± 2.0** | {kid} | **31.4 ± 1.0** |") in text
    assert (f"| cat-random | ✓ | ✓ | ✗ | 90.0 ± 2.0 | {kid} | 15.0 ± 1.0 | 55.0 ± 2.0 | {kid} | "
            "30.0 ± 1.0 |") in text
    assert (f"| freezed | ✗ | ✗ | ✗ | 100.0 ± 2.0 | {kid} | 12.0 ± 1.0 | 66.0 ± 2.0 | {kid} | "
            "25.9 ± 1.0 |") in text
    assert text.count("**") == 2 * (4 + 6) + 2  # four + six KID bold cells + the title


def _frame(values: dict[str, tuple[list[float], list[float]]]) -> pd.DataFrame:
    rows = []
    for method, (fids, mious) in values.items():
        for seed, (f, m) in enumerate(zip(fids, mious)):
            rows.append({"method": method, "seed": seed, "pair": "A→B", "fid": f, "miou": m,
                         "status": "complete"})
    return pd.DataFrame(rows)


def test_best_follows_each_metrics_direction_and_rounding_ties_are_all_bold():
    final = _frame({"a": ([30.0, 32.0], [0.10, 0.12]),
                    "b": ([20.04, 20.04], [0.20, 0.20]),   # shows as 20.0: tied with c
                    "c": ([20.0, 20.02], [0.40, 0.50])})
    table = build_table(final, ["method"], ["fid", "miou"], order={"method": ["c", "b", "a"]})
    assert [r["method"] for r in table.rows] == ["c", "b", "a"]
    assert [c.best for c in table.column("fid")] == [True, True, False]
    assert [c.best for c in table.column("miou")] == [True, False, False]
    assert table.cell(0, "miou").mean == pytest.approx(45.0)
    assert table.cell(0, "miou").std == pytest.approx(math.sqrt(50.0))  # (40, 50), ddof=1
    one_seed = build_table(final[final["seed"] == 0], ["method"], ["fid"])
    assert math.isnan(one_seed.cell(0, "fid").std)
    assert "| a | 30.0 |" in md(one_seed)  # no "± nan" with a single seed


def test_affinity_only_studies_get_no_switch_columns(tmp_path):
    methods = {name: {"baseline": "cat", "affinity": name,
                      "options": {"two_stage": True, "residual": True}}
               for name in ("text", "segmentation", "combination")}
    table = study_tables(load_study(write_study(tmp_path, methods=methods)))["main"]
    assert table.switches == []  # paper Table 1: the affinity method is the row label
    assert "✓" not in md(table)


def test_a_missing_option_counts_as_off(tmp_path):
    methods = {"full": {"baseline": "cat", "affinity": "text",
                        "options": {"two_stage": True, "residual": True}},
               "no-resid": {"baseline": "cat", "affinity": "text",
                            "options": {"two_stage": True}}}
    table = study_tables(load_study(write_study(tmp_path, methods=methods)))["main"]
    assert table.switches == ["residual"]
    assert [r["residual"] for r in table.rows] == [True, False]


def test_unfinished_trials_are_marked_with_a_dagger(study_dir):
    interrupt_trial(trial_dir_of(study_dir, "freezed", 100, 0))
    table = study_tables(load_study(study_dir))["main"]
    assert table.cell(2, "fid", G100).incomplete and not table.cell(2, "fid", G25).incomplete
    # seed 0 stopped after its 2nd evaluation: FID 64 + 10, KID 0.02, mIoU 24.9 - 2 enter
    # the mean
    assert ("| freezed | ✗ | ✗ | ✗ | 100.0 ± 2.0 | **10.00 ± 0.00** | 12.0 ± 1.0 | 69.3 ± 4.2† | "
            "13.33 ± 5.77† | 25.2 ± 2.1† |" in md(table))
    assert "† includes unfinished trials" in md(table)


def test_transfer_pairs_become_column_groups(tmp_path):
    a = write_study(tmp_path, "coco2ade")
    b = write_study(tmp_path, "ade2coco", source="ade20k", target="coco_stuff", fid_offset=5.0)
    table = study_tables(load_studies([a, b]))["main"]
    assert table.groups == [G25, G100, "ADE→COCO · 25 images", "ADE→COCO · 100 images"]
    assert table.cell(0, "fid", "ADE→COCO · 100 images").mean == pytest.approx(45.0)
    assert len(table.rows) == 3


def test_training_free_next_to_finetuned_rows_are_split_and_italic(tmp_path):
    tuned = write_study(tmp_path, "finetuned")
    free = write_study(tmp_path, "training_free", training_free=True, fid_offset=20.0)
    table = study_tables(load_studies([tuned, free]))["main"]
    assert "training_free" in table.switches
    assert [(r["method"], r["training_free"]) for r in table.rows][:2] == [
        ("cat-combination", False), ("cat-combination", True)]
    assert table.cell(1, "fid", G25).mean == pytest.approx(80.0)
    assert table.italic_rows == {0, 2, 4}
    assert "| *cat-combination* | ✓ | ✓ | ✓ | ✗ | ***60.0 ± 2.0***" in md(table)
    assert "| cat-combination | ✓ | ✓ | ✓ | ✓ | 80.0 ± 2.0 |" in md(table)
    assert "Italic rows: finetuned references" in md(table)


def test_latex_is_booktabs_with_escapes_bold_and_checkmarks(tables):
    tex = to_latex(tables["main"])
    for token in ("\\toprule", "\\midrule", "\\bottomrule", "\\cmidrule(lr){5-7}",
                  "\\multicolumn{3}{c}{COCO$\\to$ADE $\\cdot$ 25 images}",
                  "$\\downarrow$FID & $\\downarrow$KID$\\times$10$^3$ & $\\uparrow$mIoU"):
        assert token in tex
    assert ("cat-combination & \\checkmark & \\checkmark & \\checkmark & "
            "\\textbf{60.0 $\\pm$ 2.0} & \\textbf{10.00 $\\pm$ 0.00} & "
            "\\textbf{25.0 $\\pm$ 1.0}") in tex
    assert "freezed & $\\times$ & $\\times$ & $\\times$ & 100.0 $\\pm$ 2.0" in tex
    body = [line for line in tex.splitlines() if not line.startswith("%")]
    assert all(ord(ch) < 128 for line in body for ch in line)  # pdflatex-safe


def test_latex_escapes_special_characters_in_labels():
    final = pd.DataFrame({"method": ["cat_text 50%", "a&b"], "fid": [1.0, 2.0],
                          "pair": ["A→B", "A→B"]})
    tex = to_latex(build_table(final, ["method"], ["fid"], order={"method": ["cat_text 50%"]}))
    assert "cat\\_text 50\\% & \\textbf{1.0}" in tex
    assert "a\\&b & 2.0" in tex


def test_csv_holds_numbers_per_column(tables):
    frame = pd.read_csv(io.StringIO(to_csv(tables["main"])))
    row = frame.set_index("Method").loc["cat-random"]
    assert row[f"{G100} FID mean"] == pytest.approx(55.0)
    assert row[f"{G100} FID std"] == pytest.approx(2.0)
    assert row[f"{G100} mIoU mean"] == pytest.approx(30.0)
    assert row[f"{G100} FID n"] == 3 and not row[f"{G100} FID best"]
    assert frame.set_index("Method").loc["cat-combination", f"{G25} FID best"]
    assert row["2 stages"] and not row["CAT"]


def test_piti_table5_rows_get_fixdec_prompts_and_cat_columns(tmp_path):
    """The rows of studies/piti_ablation.yaml: prompt_count > 0 is Prompts, an affinity is CAT."""
    methods = {"finetune-all": {"baseline": "cat", "affinity": None, "options": {
                   "use_affinity": False, "prompt_count": 0, "fix_decoder": False}},
               "fixdec": {"baseline": "cat", "affinity": None, "options": {
                   "use_affinity": False, "prompt_count": 0, "fix_decoder": True}},
               "fixdec-prompts": {"baseline": "cat", "affinity": None, "options": {
                   "use_affinity": False, "prompt_count": 4, "fix_decoder": True}},
               "cat-combination": {"baseline": "cat", "affinity": "combination",
                                   "options": {"prompt_count": 4, "fix_decoder": True}}}
    table = study_tables(load_study(write_study(tmp_path, methods=methods)))["main"]
    assert table.switches == ["fix_decoder", "prompt_count", "affinity"]
    assert [(r["fix_decoder"], r["prompt_count"], r["affinity"]) for r in table.rows] == [
        (False, False, False), (True, False, False), (True, True, False), (True, True, True)]
    assert "| FixDec | Prompts | CAT |" in md(table)


def test_single_seed_kid_shows_its_own_spread_and_the_floor_is_never_best():
    final = pd.DataFrame([
        {"method": m, "seed": 0, "pair": "A→B", "fid": f, "fid_floor": 117.0, "kid": k,
         "kid_std": ks, "miou": 0.5, "miou_real": 0.815, "status": "complete"}
        for m, f, k, ks in (("cat", 250.0, 0.154, 0.004), ("random", 300.0, 0.29, 0.007))])
    table = build_table(final, ["method"], ["fid", "fid_floor", "kid", "miou", "miou_real"])
    kid = table.column("kid")
    assert [c.std for c in kid] == pytest.approx([4.0, 7.0])    # ×10³, the trials' own std
    assert all(c.own_spread for c in kid)
    assert math.isnan(table.cell(0, "fid").std)                 # FID has no per-trial spread
    assert not any(c.best for c in table.column("fid_floor"))   # a reference, not a result
    assert not any(c.best for c in table.column("miou_real"))   # the same for mIoU
    text = md(table)
    assert "| cat | **250.0** | 117.0 | **154.00 ± 4.00** | **50.0** | 81.5 |" in text
    assert "KID×10³: ± is the trial's own standard deviation" in text
    assert "FID floor: held-out real images" in text
    assert "mIoU real: the evaluation segmenter on the real images" in text
    # with several seeds the ± is the spread over seeds again
    two = pd.concat([final, final.assign(seed=1, kid=final["kid"] + 0.002)])
    cell = build_table(two, ["method"], ["kid"]).cell(0, "kid")
    assert not cell.own_spread and cell.std == pytest.approx(1000 * math.sqrt(2e-6))

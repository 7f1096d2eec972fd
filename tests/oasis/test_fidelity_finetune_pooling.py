"""benchmarks/fidelity_finetune.py --pool-seeds: means and stds over seeds, refused mixes."""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_benchmark_script


@pytest.fixture(scope="module")
def ff():
    return load_benchmark_script("fidelity_plots")


def _row(seed, fids, affinity="combination", size=25, iterations=(-1, 0, 300),
         source_iterations=1500, target="synthetic_target"):
    curve = [{"iteration": it, "fid": f, "kid": f / 1000, "miou": 1 - f / 1000}
             for it, f in zip(iterations, fids)]
    return {"variant": "paper", "affinity": affinity, "size": size, "seed": seed,
            "target": target, "source_iterations": source_iterations,
            "freeze_d": 0, "floor": {"fid_floor": 95.0, "kid_floor": 0.0}, "curve": curve}


def test_pooled_mean_and_sample_std_per_evaluation_as_the_harness_tables(ff):
    frame = ff.seed_frame([_row(0, [260, 270, 250]), _row(1, [264, 274, 230]),
                           _row(0, [330, 340, 300], affinity="random")])
    assert len(frame) == 9 and set(frame["seed"]) == {0, 1}
    table = ff.pooled_table(frame)
    # mean ± sample std (ddof 1) over seeds 0 and 1, KID×10³ and mIoU % as the harness shows them
    assert "| synthetic_target | 1500 | paper | combination | 25 | 0 | -1 | 262.0 ± 2.8 | 262.00 ± 2.83 | 73.8 ± 0.3 |" in table
    assert ("| synthetic_target | 1500 | paper | combination | 25 | 0 | 300 | **240.0 ± 14.1** | **240.00 ± 14.14** | "
            "**76.0 ± 1.4** |") in table                   # the table's best cells, in bold
    assert "| synthetic_target | 1500 | paper | random | 25 | 0 | 300 | 300.0 | 300.00 | 70.0 |" in table   # one seed


def test_a_seed_twice_or_another_evaluation_grid_is_refused(ff):
    with pytest.raises(ValueError, match="seed found twice"):
        ff.seed_frame([_row(0, [260, 270, 250]), _row(0, [261, 271, 251])])
    with pytest.raises(ValueError, match="seed 1 was evaluated at other iterations"):
        ff.seed_frame([_row(0, [260, 270, 250]),
                       _row(1, [260, 270, 250], iterations=(-1, 0, 100))])


def test_plot_pooled_draws_one_curve_per_group(ff, tmp_path, capsys, monkeypatch):
    path = tmp_path / "runs.jsonl"
    rows = [_row(0, [260, 270, 250]), _row(1, [264, 274, 230]), _row(0, [330, 340, 300], "random")]
    path.write_text("".join(json.dumps(dict(r, miou_real=0.815)) + "\n" for r in rows))
    import fidelity_common

    drawn = []
    line_panels = fidelity_common.line_panels
    monkeypatch.setattr(fidelity_common, "line_panels",
                        lambda panels, out: drawn.extend(panels) or line_panels(panels, out))
    png = tmp_path / "pooled.png"
    assert ff.plot_pooled(path, png) == 0
    black = {p["title"]: [h["y"] for h in p["hlines"] if h["colour"] is None] for p in drawn}
    assert list(black.values()) == [[95.0], [0.0], [0.815]]   # FID / KID floor, real mIoU
    # another target's row (another floor, no miou_real) leaves no line that would mislead
    other = dict(_row(0, [300, 310, 290]), target="synthetic_aerial",
                 floor={"fid_floor": 107.7, "kid_floor": 0.0})
    assert ff._references([dict(rows[0], miou_real=0.815), other]) == {"kid_floor": 0.0}
    out = capsys.readouterr().out
    assert out.count("| paper | combination |") == 3 and out.count("| paper | random |") == 3
    from PIL import Image

    with Image.open(png) as im:     # three panels, and their legend below
        assert im.width == 3 * 330 and im.height > 230


def test_runs_of_another_source_model_or_target_domain_never_pool(ff, tmp_path, monkeypatch):
    rows = [_row(0, [260, 270, 250]), _row(1, [180, 190, 170], source_iterations=6000),
            _row(2, [300, 310, 290], target="synthetic_aerial")]
    table = ff.pooled_table(ff.seed_frame(rows))
    # three groups of one seed each, not one mean of three (which would read 246.7 at -1)
    assert "| synthetic_target | 1500 | paper | combination | 25 | 0 | -1 | 260.0 |" in table
    assert "| synthetic_target | 6000 | paper | combination | 25 | 0 | -1 | 180.0 |" in table
    assert "| synthetic_aerial | 1500 | paper | combination | 25 | 0 | -1 | 300.0 |" in table
    assert "246.7" not in table
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    labels = []
    monkeypatch.setattr(ff, "_draw", lambda curves, *a: labels.extend(c[0] for c in curves) or 0)
    ff.plot_pooled(path, None)
    # the legend names what tells the curves apart, and one seed in the singular
    assert labels == [
        "paper / combination (n=25, FreezeD 0, synthetic_target, source 1500 it, mean of 1 seed)",
        "paper / combination (n=25, FreezeD 0, synthetic_target, source 6000 it, mean of 1 seed)",
        "paper / combination (n=25, FreezeD 0, synthetic_aerial, source 1500 it, mean of 1 seed)"]


def test_size_plot_takes_each_runs_last_evaluation_and_its_training_free_start(ff):
    rows = [_row(0, [260, 270, 250]), _row(1, [264, 274, 230]),
            _row(0, [200, 210, 190, 180], size=400, iterations=(-1, 0, 300, 600)),
            _row(0, [330, 340, 300], affinity="random")]
    final = ff.size_frame(ff.seed_frame(rows))
    by = {(r.method, r.target_size, r.seed): r for r in final.itertuples()}
    assert len(final) == 8
    assert by[("combination finetuned (300 it)", 25, 1)].fid == 230
    assert by[("combination training-free", 25, 1)].fid == 264
    # the longer run at 400 ends at its own last evaluation, and says so
    assert by[("combination finetuned (600 it)", 400, 0)].fid == 180
    assert by[("random training-free", 25, 0)].fid == 330
    # the references ride along, for the size plot's dashed lines; rows before miou_real: none
    assert set(final["fid_floor"]) == {95.0} and final["miou_real"].isna().all()
    real = ff.size_frame(ff.seed_frame([dict(r, miou_real=0.815) for r in rows]))
    assert set(real["miou_real"]) == {0.815}
    # another variant in the file is named in every label
    other = dict(_row(2, [250, 260, 240]), variant="fixed")
    labels = set(ff.size_frame(ff.seed_frame([*rows, other]))["method"])
    assert "combination finetuned (300 it, variant fixed)" in labels
    assert "combination finetuned (300 it, variant paper)" in labels


def test_sizes_keeps_only_the_runs_of_those_sizes(ff, tmp_path):
    path = tmp_path / "runs.jsonl"
    rows = [_row(0, [260, 270, 250]), _row(0, [200, 210, 190], size=400),
            _row(0, [220, 230, 210], size=100)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r["size"] for r in ff._read(path, None, "25,400")] == [25, 400]
    assert [r["size"] for r in ff._read(path, "paper/combination")] == [25, 400, 100]
    assert ff._read(path, "paper/random", "25") == []


def test_pathways_table_and_picture_read_each_recorded_evaluation(ff, tmp_path):
    row = _row(0, [260, 270, 250], affinity="random")
    for c, top1, share in zip(row["curve"][1:], (0.25, 0.75), (0.0, 0.4)):
        c["pathways"] = {"a_top1": top1, "res_share": share, "class_contrast": 0.3}
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps(row) + "\n" + json.dumps(_row(1, [1, 2, 3])) + "\n")
    table = ff.plot_pathways(rows, tmp_path / "pathways.png")
    assert (tmp_path / "pathways.png").stat().st_size > 0
    body = table.splitlines()[2:]
    assert body == ["| paper / random (n=25, seed 0) | 0 | 270.0 | 0.25 | 0.0 | 0.3 |",
                    "| paper / random (n=25, seed 0) | 300 | 250.0 | 0.75 | 0.4 | 0.3 |"]
    (tmp_path / "none.jsonl").write_text(json.dumps(_row(1, [1, 2, 3])) + "\n")
    with pytest.raises(SystemExit, match="no run recorded"):
        ff.plot_pathways(tmp_path / "none.jsonl", tmp_path / "none.png")


def _rare_row(seed, fids, rare_iou, other_iou, affinity="combination", per_class=1):
    """A --rare run: class "house" at `rare_iou`, "lawn" and "sea" at `other_iou` and 0."""
    row = _row(seed, fids, affinity)
    for c, r, o in zip(row["curve"], rare_iou, other_iou):
        c["iou"] = {"lawn": o, "house": r, "sea": 0.0}
    if per_class is not None:
        row["rare"] = {"classes": ["house"], "per_class": per_class}
    return row


def test_rare_runs_pool_apart_and_read_their_rare_classes(ff, tmp_path, monkeypatch):
    rows = [_rare_row(0, [200, 210, 190], [0.9, 0.8, 0.7], [0.6, 0.7, 0.8]),
            _rare_row(1, [204, 214, 194], [0.7, 0.6, 0.5], [0.6, 0.7, 0.9]),
            _rare_row(0, [300, 260, 220], [0.1, 0.2, 0.3], [0.2, 0.5, 0.8], "random"),
            _rare_row(2, [260, 270, 250], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], per_class=None)]
    frame = ff.rare_frame(rows[:3])
    one = frame[(frame["seed"] == 0) & (frame["affinity"] == "combination")]
    assert one["iou_rare"].tolist() == [0.9, 0.8, 0.7]
    assert one["iou_other"].tolist() == pytest.approx([0.3, 0.35, 0.4])   # lawn and sea
    assert set(frame["rare"]) == {"house: 1 image each"}
    # a run on the harness's set never pools with the rare runs (the "rare" column keeps it
    # apart); it is left out of the rare picture unless its classes are named
    table = ff.pooled_table(ff.seed_frame([rows[0], rows[3]]))
    assert "| 0 | house: 1 image each | -1 | 200.0 |" in table and "|  | -1 | 260.0 |" in table
    assert len(ff.rare_frame(rows)) == 9
    assert len(ff.rare_frame(rows, ["house"])) == 12
    # --rare-shown: by images per rare class, "kl" for the harness's set
    assert len(ff.rare_frame(rows, ["house"], ["kl"])) == 3
    assert set(ff.rare_frame(rows, ["house"], ["1"])["seed"]) == {0, 1}
    assert len(ff.rare_frame(rows, None, ["0", "1"])) == 9
    with pytest.raises(SystemExit, match="no run with rare classes"):
        ff.rare_frame(rows[3:])
    # the pooled curves take the same filter (--pool-seeds --rare-shown kl)
    runs = tmp_path / "all.jsonl"
    runs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r["seed"] for r in ff._read(runs, None, None, ["kl"])] == [2]
    assert [r["seed"] for r in ff._read(runs, None, None, ["1", "kl"])] == [0, 1, 0, 2]
    with pytest.raises(ValueError, match=r"no IoU recorded for \['tree'\]"):
        ff.class_means(rows[0]["curve"][0], ["tree"])

    path = tmp_path / "rare.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    import fidelity_common

    drawn = []
    monkeypatch.setattr(fidelity_common, "line_panels",
                        lambda panels, out: drawn.extend(panels) or out)
    table = ff.plot_rare(path, tmp_path / "rare.png")
    # mean ± sample std over seeds 0 and 1, IoU in %; one seed: the value alone
    assert "| combination | 2 | 300 | 192.0 ± 2.8 | 60.0 ± 14.1 | 42.5 ± 3.5 |" in table
    assert "| random | 1 | 0 | 260.0 | 20.0 | 25.0 |" in table
    assert [p["title"] for p in drawn] == list(ff.RARE_PANELS.values())
    rare_panel = drawn[1]
    assert rare_panel["series"][0]["x"] == [0, 300]                # from iteration 0 on
    assert rare_panel["series"][0]["y"] == pytest.approx([0.7, 0.6])
    assert [h["y"] for h in rare_panel["hlines"]] == pytest.approx([0.8, 0.1])  # training-free
    # runs on the harness's set, read with named classes, are labelled as such
    both = tmp_path / "both.jsonl"
    both.write_text("".join(json.dumps(r) + "\n" for r in (rows[0], rows[3])))
    assert "| KL-greedy set | 1 | 0 | 270.0 | 50.0 | 25.0 |" in ff.plot_rare(
        both, tmp_path / "both.png", classes=["house"])


def test_the_rare_picture_from_the_command_line(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    rows = [_rare_row(0, [200, 210, 190], [0.9, 0.8, 0.7], [0.6, 0.7, 0.8], per_class=0),
            _rare_row(0, [260, 270, 250], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], per_class=None)]
    path = tmp_path / "rare.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "fidelity_finetune.py"), "--out", str(path),
         "--plot-only", "--rare", "house", "--rare-plot", str(tmp_path / "rare.png")],
        capture_output=True, text=True, cwd=root, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": f"{root}:{root / 'benchmarks'}"})
    assert done.returncode == 0, done.stderr
    assert "| house: in no image | 1 | 300 | 190.0 | 70.0 | 40.0 |" in done.stdout
    assert "| KL-greedy set | 1 | 300 | 250.0 | 50.0 | 25.0 |" in done.stdout
    assert (tmp_path / "rare.png").stat().st_size > 0

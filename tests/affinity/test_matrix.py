"""AffinityMatrix: validation, save/load round trip, top matches."""

from __future__ import annotations

import numpy as np
import pytest

from cat_models.affinity import AffinityError, AffinityMatrix, format_top_matches, top_matches


def _matrix() -> AffinityMatrix:
    values = np.array([[0.7, 0.1, 0.5], [0.2, 0.1, 0.5], [0.1, 0.8, 0.0]])
    return AffinityMatrix(values, ["sky", "grass", "car, auto"], ["sea", "lawn", "street"],
                          "text", {"backend": "test", "templates": ["{}"]})


def test_shape_must_match_names():
    with pytest.raises(AffinityError, match=r"shape \(2, 3\).*3 source × 3 target"):
        AffinityMatrix(np.zeros((2, 3)), ["a", "b", "c"], ["x", "y", "z"], "text")
    with pytest.raises(AffinityError, match="NaN"):
        AffinityMatrix(np.full((1, 1), np.nan), ["a"], ["x"], "text")


def test_save_load_round_trip(tmp_path):
    m = _matrix()
    npy = m.save(tmp_path / "out" / "A")
    assert npy.name == "A.npy"
    assert {p.name for p in npy.parent.iterdir()} == {"A.npy", "A.csv", "A.json"}
    back = AffinityMatrix.load(npy)
    np.testing.assert_array_equal(back.values, m.values)
    assert back.source_names == m.source_names and back.target_names == m.target_names
    assert back.method == "text" and back.provenance == m.provenance
    # The CSV alone keeps the names (a comma inside a name survives quoting) and exact values.
    (tmp_path / "out" / "A.json").unlink()
    from_csv = AffinityMatrix.load(npy)
    assert from_csv.source_names == ("sky", "grass", "car, auto")
    assert from_csv.target_names == ("sea", "lawn", "street")
    rows = np.loadtxt(tmp_path / "out" / "A.csv", delimiter=",", skiprows=1, usecols=(1, 2, 3),
                      quotechar='"')
    np.testing.assert_array_equal(rows, m.values)


def test_load_missing_file_names_the_path(tmp_path):
    with pytest.raises(AffinityError, match="nothere.npy: affinity array file not found"):
        AffinityMatrix.load(tmp_path / "nothere.npy")


def test_top_matches_order_and_ties():
    tm = top_matches(_matrix(), k=2)
    assert tm["sea"] == [("sky", 0.7), ("grass", 0.2)]
    assert tm["lawn"][0] == ("car, auto", 0.8)
    # equal weights: source order decides, so the output is reproducible
    assert [name for name, _ in tm["street"]] == ["sky", "grass"]
    text = format_top_matches(_matrix(), k=1)
    assert "sea" in text and "-> sky (0.700)" in text
    with pytest.raises(AffinityError, match="k must be >= 1"):
        top_matches(_matrix(), 0)


def test_top1_agreement_counts_only_classes_with_a_counterpart():
    a = AffinityMatrix(np.array([[0.7, 0.1, 0.5], [0.3, 0.9, 0.5]]), ["sky", "grass"],
                       ["cloudy sky", "lawn", "lava"], "text")
    assert a.top1_agreement({"cloudy sky": "sky", "lawn": "grass", "lava": None}) == (2, 2)
    assert a.top1_agreement({"cloudy sky": "grass", "lawn": "grass"}) == (1, 2)   # lava absent
    assert a.top1_agreement({}) == (0, 0)

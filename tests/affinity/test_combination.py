"""Majority vote (paper §3.1) with FID-ranked tie breaks, and the average ablation."""

from __future__ import annotations

import numpy as np
import pytest

from cat_models.affinity import (
    AffinityError,
    AffinityInputs,
    AffinityMatrix,
    average_affinity,
    estimate_affinity,
    majority_vote,
)

SOURCE = ["sky", "grass", "road", "car"]
TARGET = ["sea", "lawn", "street"]


def _one_hot_columns(method: str, argmaxes: list[int]) -> AffinityMatrix:
    values = np.full((len(SOURCE), len(TARGET)), 0.1)
    for k, l in enumerate(argmaxes):
        values[l, k] = 0.7
    return AffinityMatrix(values, SOURCE, TARGET, method)


MATRICES = {
    "text": _one_hot_columns("text", [0, 1, 3]),
    "segmentation": _one_hot_columns("segmentation", [0, 2, 2]),
    "features": _one_hot_columns("features", [1, 3, 1]),
}


def test_two_of_three_agree_and_result_is_binary():
    a = majority_vote(MATRICES, fid_ranking=["features", "segmentation", "text"])
    assert set(np.unique(a.values)) == {0.0, 1.0}
    np.testing.assert_array_equal(a.values.sum(0), [1, 1, 1])
    assert a.argmax_source()[0] == 0  # text + segmentation vote "sky"; features ("grass") loses
    assert a.provenance["decided_by"]["sea"] == "vote"
    assert a.method == "combination"


def test_all_disagree_lowest_fid_method_decides():
    # lawn: text->grass, seg->road, features->car;  street: text->car, seg->road, feat->grass
    a = majority_vote(MATRICES, fid_ranking=["features", "segmentation", "text"])
    assert [SOURCE[i] for i in a.argmax_source()[1:]] == ["car", "grass"]
    assert a.provenance["decided_by"]["lawn"] == "features"
    b = majority_vote(MATRICES, fid_ranking=["segmentation", "text", "features"])
    assert [SOURCE[i] for i in b.argmax_source()[1:]] == ["road", "road"]


def test_without_ranking_the_documented_order_decides():
    a = majority_vote(MATRICES)  # DEFAULT_ORDER: text, segmentation, features
    assert [SOURCE[i] for i in a.argmax_source()] == ["sky", "grass", "car"]
    assert a.provenance["tie_break_order"] == ["text", "segmentation", "features"]
    # a partial ranking puts its methods first, the rest follow the default order
    b = majority_vote(MATRICES, fid_ranking=["segmentation"])
    assert b.provenance["tie_break_order"] == ["segmentation", "text", "features"]


def test_average_is_mean_of_columns_with_unit_sums():
    a = average_affinity(MATRICES)
    expected = np.mean([m.values for m in MATRICES.values()], axis=0)
    expected /= expected.sum(0)
    np.testing.assert_allclose(a.values, expected)
    assert a.method == "average"
    top1 = average_affinity(MATRICES, top_k=1)
    assert ((top1.values > 0).sum(0) == 1).all()


def test_mismatched_classes_are_rejected():
    other = AffinityMatrix(np.ones((2, 3)) / 2, ["sky", "grass"], TARGET, "features")
    with pytest.raises(AffinityError, match="'features' has other class names than 'text'"):
        majority_vote({"text": MATRICES["text"], "features": other})
    with pytest.raises(AffinityError, match="no affinity matrices"):
        majority_vote({})


def test_registry_runs_combination_and_average():
    inputs = AffinityInputs(matrices=MATRICES, fid_ranking=["segmentation"])
    a = estimate_affinity("combination", inputs)
    assert [SOURCE[i] for i in a.argmax_source()] == ["sky", "road", "road"]
    assert estimate_affinity("average", inputs).method == "average"
    with pytest.raises(AffinityError, match="matrices required"):
        estimate_affinity("combination", AffinityInputs())


def test_weighted_vote_lets_a_strong_method_outvote_two_weak_ones():
    from cat_models.affinity.combination import weighted_vote

    src, tgt = ["a", "b", "c"], ["x", "y"]

    def one_hot(rows):
        v = np.zeros((3, 2))
        v[rows, [0, 1]] = 1.0
        return AffinityMatrix(v, src, tgt, "m")

    mats = {"text": one_hot([0, 1]), "features": one_hot([0, 2]),
            "segmentation": one_hot([1, 2])}
    # equal weights: the paper's vote (x -> a by text + features, y -> c by features + seg)
    equal = weighted_vote(mats, {m: 1.0 for m in mats})
    np.testing.assert_array_equal(equal.argmax_source(), majority_vote(mats).argmax_source())
    # segmentation heavier than text and features together: it decides x as well
    heavy = weighted_vote(mats, {"text": 0.05, "features": 0.45, "segmentation": 0.6})
    np.testing.assert_array_equal(heavy.argmax_source(), [1, 2])
    assert heavy.values.sum(axis=0).tolist() == [1.0, 1.0]
    with pytest.raises(AffinityError, match="no weight for"):
        weighted_vote(mats, {"text": 1.0})
    with pytest.raises(AffinityError, match="finite and >= 0"):
        weighted_vote(mats, {"text": 1.0, "features": -1.0, "segmentation": 1.0})


def test_methods_without_evidence_for_a_class_abstain_instead_of_voting_source_class_0():
    from cat_models.affinity.combination import weighted_vote

    # "street" never appears in the few-shot images: segmentation's column is uniform (its
    # provenance says so), features' is flat without provenance; their argmax is "sky" (0)
    seg = _one_hot_columns("segmentation", [0, 2, 2]).with_values(
        np.where(np.arange(3) == 2, 0.25, _one_hot_columns("s", [0, 2, 2]).values),
        absent_target_classes=["street"])
    feat_values = _one_hot_columns("features", [1, 3, 1]).values
    feat_values[:, 2] = 0.0
    feat = AffinityMatrix(feat_values, SOURCE, TARGET, "features")
    mats = {"text": MATRICES["text"], "segmentation": seg, "features": feat}
    assert seg.without_evidence().tolist() == [False, False, True]
    assert feat.without_evidence().tolist() == [False, False, True]
    assert MATRICES["text"].without_evidence().tolist() == [False, False, False]
    assert seg.argmax_source()[2] == feat.argmax_source()[2] == 0   # what would have won
    for a in (majority_vote(mats), majority_vote(mats, fid_ranking=["segmentation"]),
              weighted_vote(mats, {"text": 0.1, "segmentation": 1.0, "features": 1.0})):
        assert SOURCE[a.argmax_source()[2]] == "car"                 # text's vote, alone
        assert a.provenance["abstained"] == {"street": ["segmentation", "features"]}
    assert majority_vote(mats).provenance["decided_by"]["street"] == "text"
    # the other classes vote as before
    np.testing.assert_array_equal(majority_vote(mats).argmax_source()[:2],
                                  majority_vote(MATRICES).argmax_source()[:2])
    # the average leaves the flat columns out: street is text's column, renormalised
    avg = average_affinity(mats)
    np.testing.assert_allclose(avg.values[:, 2], MATRICES["text"].values[:, 2]
                               / MATRICES["text"].values[:, 2].sum())
    assert not np.allclose(average_affinity(MATRICES).values[:, 2], avg.values[:, 2])
    # every method without evidence: the tie-break order's first decides, as before
    flat = {m: AffinityMatrix(np.full((4, 3), 0.25), SOURCE, TARGET, m) for m in MATRICES}
    assert majority_vote(flat).provenance["decided_by"] == {t: "text" for t in TARGET}
    np.testing.assert_allclose(average_affinity(flat).values, 0.25)

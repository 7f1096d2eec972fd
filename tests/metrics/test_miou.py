"""mIoU on handmade label maps whose answer is worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cat_models.metrics import confusion_matrix, iou_from_confusion, label_lut, mean_iou, miou


def test_known_answer_with_unlabeled_and_absent_classes():
    # ground truth: 0 = unlabeled, classes 1..4 (class 4 in neither map)
    target = torch.tensor([[0, 0, 1, 1],
                           [1, 1, 2, 2],
                           [2, 2, 2, 3]])
    predicted = torch.tensor([[3, 3, 1, 1],   # predictions on unlabeled pixels are ignored
                              [1, 2, 2, 2],
                              [2, 2, 1, 3]])
    # class 1: tp 3 (1,1,1), gt 4, pred on labeled 4 -> 3 / 5
    # class 2: tp 4, gt 5, pred 5 -> 4 / 6
    # class 3: tp 1, gt 1, pred 1 -> 1
    result = miou(predicted, target, num_classes=4, class_names=["a", "b", "c", "d"])
    assert result["per_class_iou"] == pytest.approx({"a": 3 / 5, "b": 4 / 6, "c": 1.0})
    assert "d" not in result["per_class_iou"]
    assert result["miou"] == pytest.approx((3 / 5 + 4 / 6 + 1.0) / 3)


def test_confusion_counts_rows_truth_columns_prediction():
    target = torch.tensor([1, 1, 2, 0])
    predicted = torch.tensor([2, 1, 2, 1])
    conf = confusion_matrix(predicted, target, 2)
    assert conf.tolist() == [[0, 0, 0], [0, 1, 1], [0, 0, 1]]


def test_class_predicted_but_absent_from_truth_scores_zero():
    target = torch.tensor([[1, 1]])
    predicted = torch.tensor([[1, 2]])
    ious = iou_from_confusion(confusion_matrix(predicted, target, 3))
    assert ious[0] == pytest.approx(0.5) and ious[1] == 0.0 and math.isnan(ious[2])
    assert mean_iou(ious) == pytest.approx(0.25)


def test_perfect_and_empty():
    labels = torch.randint(1, 6, (2, 8, 8), generator=torch.Generator().manual_seed(0))
    assert miou(labels, labels, 5)["miou"] == 1.0
    assert math.isnan(mean_iou(np.array([np.nan, np.nan])))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(torch.zeros(2, 2, dtype=torch.long), torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match=r"target values must be 0\.\.2, got 0\.\.7"):
        confusion_matrix(torch.zeros(2, dtype=torch.long), torch.tensor([0, 7]), 2)


def test_label_lut_matches_names():
    assert label_lut(["a", "b"], ["a", "b"]).tolist() == [0, 1, 2]
    # a segmenter on a subset of the classes (e.g. Cityscapes train ids): others -> ignored
    assert label_lut(["x", "road", "car"], ["car", "road"]).tolist() == [0, 0, 2, 1]
    with pytest.raises(ValueError, match="no class name in common"):
        label_lut(["a"], ["b"])

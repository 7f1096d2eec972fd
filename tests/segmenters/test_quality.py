"""Quality bar (issue #5): the evaluation segmenter, trained on the full target training split
of the embedded benchmark, reaches >= 70% mIoU on real target validation images; otherwise
the mIoU of generated images would say little."""

from __future__ import annotations

import pytest
import torch

from cat_models.data import open_dataset
from cat_models.metrics import miou

pytestmark = pytest.mark.slow


def test_eval_segmenter_reaches_70_miou_on_real_target_val(bench64, target_eval_segmenter):
    val = open_dataset("folder", bench64.target_root, "val", resolution=64)
    assert len(val) >= 200
    images = torch.stack([val[i]["image"] for i in range(len(val))])
    labels = torch.stack([val[i]["label"] for i in range(len(val))])
    predicted = torch.cat([target_eval_segmenter.predict(b) for b in images.split(64)])
    result = miou(predicted, labels, val.num_classes, val.class_names)
    assert target_eval_segmenter.train_info["train_images"] == 1000  # the full split
    assert result["miou"] >= 0.70, result["per_class_iou"]
    assert len(result["per_class_iou"]) == val.num_classes

"""mIoU of generated images against the label maps they were generated from (paper §4.1).

A segmenter labels each generated image; its prediction is compared pixel-wise with the input
label map. Unlabeled pixels (label 0) are ignored. IoU_k = TP / (TP + FP + FN) per class over
the whole set (accumulated confusion, not a mean of per-image IoUs, as in OASIS / SPADE);
classes absent from both prediction and ground truth have no IoU and are left out of the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def confusion_matrix(predicted: torch.Tensor, target: torch.Tensor,
                     num_classes: int) -> np.ndarray:
    """int64 [N + 1, N + 1] pixel counts: row = ground-truth label, column = predicted label.

    Both are long tensors of the same shape with values 0..N; pixels whose ground truth is 0
    (unlabeled) are dropped. A prediction of 0 (a class the segmenter does not know) counts
    as a miss of the true class.
    """
    if predicted.shape != target.shape:
        raise ValueError(f"confusion_matrix: predicted {tuple(predicted.shape)} and target "
                         f"{tuple(target.shape)} differ in shape")
    for name, t in (("predicted", predicted), ("target", target)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > num_classes):
            raise ValueError(f"confusion_matrix: {name} values must be 0..{num_classes}, got "
                             f"{int(t.min())}..{int(t.max())}")
    keep = target > 0
    n = num_classes + 1
    pairs = target[keep].long() * n + predicted[keep].long()
    counts = torch.bincount(pairs.cpu(), minlength=n * n)
    return counts.view(n, n).numpy().astype(np.int64)


def iou_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """float [N]: IoU of classes 1..N; NaN where a class is in neither prediction nor truth."""
    conf = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(conf)[1:]
    gt = conf[1:, :].sum(1)       # ground-truth pixels of each class
    pred = conf[1:, 1:].sum(0)    # predicted pixels on labeled ground truth
    union = gt + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(per_class_iou: np.ndarray) -> float:
    """Mean over classes that have an IoU (NaN entries excluded); NaN if none has."""
    valid = ~np.isnan(per_class_iou)
    return float(per_class_iou[valid].mean()) if valid.any() else float("nan")


def miou(predicted: torch.Tensor, target: torch.Tensor, num_classes: int,
         class_names: Sequence[str] | None = None) -> dict:
    """{"miou": float, "per_class_iou": {name: iou}} for one set of predictions.

    Absent classes are not in `per_class_iou`. Names default to "1".."N".
    """
    names = list(class_names) if class_names is not None else [str(k + 1) for k in
                                                                 range(num_classes)]
    return scores_from_confusion(confusion_matrix(predicted, target, num_classes), names)


def scores_from_confusion(confusion: np.ndarray, class_names: Sequence[str]) -> dict:
    """{"miou": float, "per_class_iou": {name: iou}} of an accumulated confusion matrix whose
    labels 1..N are `class_names`; classes without an IoU are left out of both."""
    ious = iou_from_confusion(confusion)
    return {"miou": mean_iou(ious),
            "per_class_iou": {class_names[k]: float(v) for k, v in enumerate(ious)
                              if not np.isnan(v)}}


def label_lut(dataset_names: Sequence[str], segmenter_names: Sequence[str]) -> torch.Tensor:
    """long [N_data + 1]: dataset label -> segmenter label (0 where the segmenter lacks it).

    Identity when the names agree; otherwise matched by name, e.g. a Cityscapes segmenter on
    the 19 train classes against the 34 label ids (the other ids are then ignored as unlabeled).
    """
    dataset_names, segmenter_names = list(dataset_names), list(segmenter_names)
    if dataset_names == segmenter_names:
        return torch.arange(len(dataset_names) + 1)
    index = {name: k + 1 for k, name in enumerate(segmenter_names)}
    lut = torch.tensor([0] + [index.get(name, 0) for name in dataset_names])
    if not (lut > 0).any():
        raise ValueError(
            f"label_lut: no class name in common between the dataset ({dataset_names[:5]}...) "
            f"and the segmenter ({segmenter_names[:5]}...)")
    return lut


def segmenter_confusion(segmenter: Any, images: torch.Tensor, labels: torch.Tensor,
                        lut: torch.Tensor) -> np.ndarray:
    """The segmenter's confusion matrix on `images` [B, 3, H', W'] against their label maps
    [B, H, W] (dataset labels, mapped to the segmenter's by `lut`); predictions at another
    size are resized to the label maps' (nearest)."""
    predicted = segmenter.predict(images.float())
    if predicted.shape[-2:] != labels.shape[-2:]:
        predicted = F.interpolate(predicted[:, None].float(), size=labels.shape[-2:],
                                  mode="nearest")[:, 0].long()
    return confusion_matrix(predicted.cpu(), lut[labels.long()], len(segmenter.class_names))


def real_image_iou(segmenter: Any, dataset: Any, indices: Sequence[int] | None = None,
                   lut: torch.Tensor | None = None, batch_size: int = 32) -> dict:
    """{"miou", "per_class_iou"} (as `miou` gives them, named by the segmenter's classes) of a
    segmenter on the real images of `dataset`'s items at `indices` (default: all; repeats
    count again), each image with its own label map (read from one item). A useful evaluation
    segmenter must score well here; the evaluator reports it beside the generated images'
    mIoU (`miou_real`, `per_class_iou_real`). A class it scores low on real images (small
    objects at low resolution, say) cannot be judged in generated ones either."""
    indices = list(range(len(dataset))) if indices is None else list(indices)
    if lut is None:
        lut = label_lut(dataset.class_names, segmenter.class_names)
    confusion = None
    with torch.no_grad():
        for start in range(0, len(indices), batch_size):
            items = [dataset[i] for i in indices[start:start + batch_size]]
            images = torch.stack([torch.as_tensor(it["image"]) for it in items])
            labels = torch.stack([torch.as_tensor(it["label"]) for it in items])
            c = segmenter_confusion(segmenter, images, labels, lut)
            confusion = c if confusion is None else confusion + c
    return scores_from_confusion(confusion, segmenter.class_names)


def real_image_miou(segmenter: Any, dataset: Any, indices: Sequence[int] | None = None,
                    lut: torch.Tensor | None = None, batch_size: int = 32) -> float:
    """The mIoU of `real_image_iou`."""
    return real_image_iou(segmenter, dataset, indices, lut, batch_size)["miou"]

"""`train_small_segmenter`: one plain loop, explicit arguments, seeded.

Cross-entropy over classes 1..N with unlabeled pixels (0) ignored; classes weighted by
inverse square-root pixel frequency (on by default) so rare classes count in mIoU, which
averages over classes. Random horizontal flips; Adam with a cosine learning-rate decay.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cat_models.segmenters.base import SegmenterError
from cat_models.segmenters.small import SmallSegmenter, SmallSegmenterConfig


def class_weights(dataset: Any, max_images: int = 500) -> torch.Tensor:
    """Inverse sqrt pixel frequency per class 1..N, mean 1 over present classes (absent: 0).

    Counted on up to `max_images` evenly spaced items.
    """
    n = dataset.num_classes + 1
    picks = np.linspace(0, len(dataset) - 1, min(max_images, len(dataset))).round().astype(int)
    counts = np.zeros(n, dtype=np.float64)
    for i in np.unique(picks):
        counts += np.bincount(np.asarray(dataset[int(i)]["label"]).ravel(), minlength=n)[:n]
    counts = counts[1:]
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = 1.0 / np.sqrt(counts[present] / counts[present].sum())
    weights[present] /= weights[present].mean()
    return torch.tensor(weights, dtype=torch.float32)


def _batch(dataset: Any, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[int(i)] for i in indices]
    return (torch.stack([it["image"] for it in items]),
            torch.stack([it["label"] for it in items]))


def train_small_segmenter(
    dataset: Any,
    iterations: int = 500,
    batch_size: int = 8,
    lr: float = 3e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    config: SmallSegmenterConfig | None = None,
    class_balanced: bool = True,
    weight_decay: float = 1e-4,
) -> SmallSegmenter:
    """Train a `SmallSegmenter` on a `SegmentationDataset` (items "image" [-1, 1], "label").

    For mIoU evaluation pass the *full* target training split (paper §4.1); for segmentation
    affinity, the source training split. Returns the model in eval mode on `device`, with
    `train_info` (iterations, seed, final loss, wall time) stored in its saved file.
    """
    if len(dataset) == 0:
        raise SegmenterError("train_small_segmenter: the dataset is empty")
    if iterations < 1 or batch_size < 1:
        raise SegmenterError(f"train_small_segmenter: iterations ({iterations}) and batch_size "
                             f"({batch_size}) must be >= 1")
    torch.manual_seed(seed)
    config = config or SmallSegmenterConfig(num_classes=dataset.num_classes)
    model = SmallSegmenter(config, dataset.class_names).to(device)
    weights = class_weights(dataset).to(device) if class_balanced else None
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, iterations)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    start, losses = time.perf_counter(), []
    bar = tqdm(range(iterations), desc="train segmenter", disable=not progress)
    for _ in bar:
        picks = torch.randint(len(dataset), (batch_size,), generator=generator)
        images, labels = _batch(dataset, picks)
        flip = torch.rand(batch_size, generator=generator) < 0.5
        images[flip], labels[flip] = images[flip].flip(-1), labels[flip].flip(-1)
        images, labels = images.to(device), labels.to(device)
        if not (labels > 0).any():  # an all-unlabeled batch has no loss to follow
            continue
        # label k -> class index k - 1; unlabeled (0) -> -1, ignored
        loss = F.cross_entropy(model(images), labels - 1, weight=weights, ignore_index=-1)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
        if progress:  # refresh=False: a forced redraw each step would ignore mininterval
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", refresh=False)
    model.eval()
    model.train_info = {
        "iterations": iterations, "batch_size": batch_size, "lr": lr, "seed": seed,
        "train_images": len(dataset), "dataset": getattr(dataset, "name", ""),
        "final_loss": float(np.mean(losses[-20:])),
        "wall_time_s": round(time.perf_counter() - start, 2),
    }
    return model

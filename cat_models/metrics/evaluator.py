"""`Evaluator`: what a trial calls every N iterations (paper §4.1 metrics: FID, mIoU; + KID).

Built once per trial with everything that does not change between evaluations (real
statistics, loaded from the cache; evaluation label maps; segmenter; feature net; the real-data
floor), then `evaluate(generate_fn)` pays only for the generated images. It knows no model
family: the generator is a function from label maps to images.

Why a floor: FID from n samples is biased upwards by a term that shrinks like 1/n, and at the
embedded benchmark's n = 64, 32 px, it dominates (hundreds of points). The FID of n *real*
images that are not in the statistics, against those statistics, is the best any generator can
score at that n: the floor. Report FID next to it (and KID, which is unbiased, with its ±).

mIoU has a reference too: the evaluation segmenter's mIoU on the *real* images of the same
label maps (`miou_real`). A generator that reproduced the real images would score it. It is no
bound (generated images can be easier for the segmenter than real ones, and score a little
above it), but two generators that both score about what real images do are judged equally
faithful to the label maps by this segmenter, whatever their gap in FID.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cat_models.metrics.feature_net import FeatureNet, load_feature_net
from cat_models.metrics.fid import (
    fid_from_features,
    inception_features,
    kid_with_std,
)
from cat_models.metrics.miou import (
    label_lut,
    real_image_iou,
    scores_from_confusion,
    segmenter_confusion,
)
from cat_models.metrics.real_stats import real_statistics

GenerateFn = Callable[[torch.Tensor], torch.Tensor]


def eval_label_maps(source: Any, n: int | None = None) -> torch.Tensor:
    """long [M, H, W] label maps from a tensor or the first `n` items of a dataset."""
    if isinstance(source, torch.Tensor):
        labels = source.long()
    else:
        count = len(source) if n is None else min(n, len(source))
        labels = torch.stack([torch.as_tensor(source[i]["label"]) for i in range(count)])
    if labels.dim() != 3 or len(labels) == 0:
        raise ValueError(f"Evaluator: label maps must be a non-empty [M, H, W] tensor, got "
                         f"{tuple(labels.shape)}")
    return labels


class Evaluator:
    """FID / KID against cached real statistics and mIoU with an evaluation segmenter.

    real_dataset: SegmentationDataset whose images define the real statistics (the paper:
        the target test split). eval_labels: [M, H, W] label maps or a dataset (its labels);
        the generator is asked for `n_samples` images (label maps cycled if n_samples > M).
    class_names: names of the label maps' classes (default: the real dataset's); matched to
        the segmenter's by name when they differ (see `label_lut`).
    seed: the torch RNG is forked and seeded around generation, so evaluations at different
        iterations see the same noise.
    floor_dataset: real images held out from the statistics (e.g. the target training split
        when the statistics are the test split); the first `n_samples` of them give the
        real-data floor at the same n (cached with the real statistics). None: no floor keys.
    device: where the Inception runs when `feature_net` is a path (a trial passes its own
        device, so a GPU trial evaluates on the GPU; the real statistics are computed there
        too when they are not cached).

    `evaluate` returns:
        fid, kid: the generated samples against the real statistics (KID: clean-fid's
            unbiased MMD², mean over 100 subsets);
        kid_std: the standard deviation of KID over those subsets (torch-fidelity's
            `kid_std`; with n_samples <= the real count every subset holds all samples, so it
            measures the real-side sampling only);
        fid_floor, kid_floor, kid_floor_std, n_floor (with `floor_dataset`): the same
            metrics for `n_floor` = min(n_samples, len(floor_dataset)) held-out real images.
            `fid - fid_floor` is the part of the FID the generator is responsible for;
        miou, per_class_iou: the evaluation segmenter on the samples;
        miou_real (when `eval_labels` is a dataset with images): the segmenter's mIoU on the
            real images of the same `n_samples` items (image and label map read together, so
            an augmenting dataset stays paired), the reference `miou` is read against
            (computed once); per_class_iou_real: its per-class IoU there, the reference of
            `per_class_iou` (a class the segmenter misses on real images cannot be judged
            in samples either);
        feature_net, segmenter, n_samples, n_real, eval_time_s: provenance.
    """

    def __init__(self, real_dataset: Any, eval_labels: Any, segmenter: Any,
                 feature_net: FeatureNet | str | Path | None = None,
                 n_samples: int | None = None, cache_dir: str | Path | None = None,
                 batch_size: int = 8, seed: int = 0, max_real_images: int | None = None,
                 class_names: Sequence[str] | None = None, progress: bool = False,
                 floor_dataset: Any = None, device: str | torch.device = "cpu") -> None:
        self.net = (feature_net if isinstance(feature_net, FeatureNet)
                    else load_feature_net(feature_net, device=device))
        self.real = real_statistics(real_dataset, self.net, cache_dir, max_real_images,
                                    progress=progress)
        labels = eval_label_maps(eval_labels)
        self.n_samples = len(labels) if n_samples is None else n_samples
        if self.n_samples < 2:
            raise ValueError(f"Evaluator: n_samples must be >= 2 for FID, got {self.n_samples}")
        reps = -(-self.n_samples // len(labels))
        self.labels = labels.repeat(reps, 1, 1)[:self.n_samples]
        self.segmenter = segmenter
        names = list(class_names) if class_names is not None else list(real_dataset.class_names)
        self.lut = label_lut(names, segmenter.class_names)
        if int(self.labels.max()) >= len(self.lut):
            raise ValueError(f"Evaluator: label maps hold label {int(self.labels.max())} but "
                             f"only {len(names)} class names were given")
        self.batch_size = batch_size
        self.seed = seed
        self.floor = (self._floor(real_dataset, floor_dataset, max_real_images, cache_dir,
                                  progress) if floor_dataset is not None else {})
        # the real images of the evaluated label maps, cycled as `self.labels` are
        self.reference = ({} if isinstance(eval_labels, torch.Tensor)
                          or "image" not in eval_labels[0] else
                          self._real_reference(eval_labels, batch_size))

    def _real_reference(self, eval_labels: Any, batch_size: int) -> dict:
        """miou_real and per_class_iou_real: the segmenter on the real images of the
        evaluated label maps, cycled as `self.labels` are."""
        real = real_image_iou(self.segmenter, eval_labels,
                              [i % len(eval_labels) for i in range(self.n_samples)], self.lut,
                              batch_size)
        return {"miou_real": real["miou"], "per_class_iou_real": real["per_class_iou"]}

    def _floor(self, real_dataset: Any, floor_dataset: Any, max_real_images: int | None,
               cache_dir: str | Path | None, progress: bool) -> dict:
        from cat_models.metrics.real_stats import dataset_description

        def where(dataset: Any) -> tuple:
            d = dataset_description(dataset)
            return d["name"], d["root"], d["split"]

        if where(floor_dataset) == where(real_dataset):
            raise ValueError("Evaluator: floor_dataset holds the images of the real statistics; "
                             "the floor needs real images held out from them (e.g. the "
                             "training split when the statistics are the test split)")
        held_out = real_statistics(floor_dataset, self.net, cache_dir, self.n_samples,
                                   progress=progress)
        kid, kid_std = kid_with_std(held_out.features, self.real, seed=self.seed)
        return {"fid_floor": fid_from_features(held_out.features, self.real),
                "kid_floor": kid, "kid_floor_std": kid_std, "n_floor": held_out.count}

    def evaluate(self, generate_fn: GenerateFn) -> dict:
        """generate_fn(labels long [B, H, W]) -> images float [B, 3, H', W'] in [-1, 1]."""
        start = time.perf_counter()
        feats, confusion = [], None
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(self.seed)
            for batch in self.labels.split(self.batch_size):
                images = generate_fn(batch)
                _check_generated(images, batch)
                feats.append(inception_features(images, self.net, self.batch_size))
                c = segmenter_confusion(self.segmenter, images, batch, self.lut)
                confusion = c if confusion is None else confusion + c
        gen = np.concatenate(feats)
        seg = scores_from_confusion(confusion, self.segmenter.class_names)
        kid, kid_std = kid_with_std(gen, self.real, seed=self.seed)
        return {
            "fid": fid_from_features(gen, self.real),
            "kid": kid,
            "kid_std": kid_std,
            **self.floor,
            "miou": seg["miou"],
            **self.reference,
            "per_class_iou": seg["per_class_iou"],
            "feature_net": self.net.identifier,
            "segmenter": self.segmenter.identifier,
            "n_samples": self.n_samples,
            "n_real": self.real.count,
            "eval_time_s": round(time.perf_counter() - start, 3),
        }


def _check_generated(images: torch.Tensor, labels: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[0] != labels.shape[0] or images.shape[1] != 3:
        raise ValueError(f"Evaluator: generate_fn returned {tuple(images.shape)} for "
                         f"{labels.shape[0]} label maps; expected [B, 3, H, W] in [-1, 1]")

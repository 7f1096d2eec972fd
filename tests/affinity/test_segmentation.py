"""Segmentation affinity (paper §3.1, Eq. 1): exact confusion counts on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cat_models.affinity import (
    AffinityError,
    AffinityInputs,
    confusion_counts,
    estimate_affinity,
    segmentation_affinity,
)

TARGET = ["sea", "lawn", "rock"]


@pytest.fixture
def toy_target(tensor_dataset):
    """Image 0: left half dark, right half bright; rows 0-1 sea, rows 2-3 lawn.
    Image 1: faintly bright (0.05) everywhere, all sea but one unlabeled pixel. No rock."""
    images = torch.zeros(2, 3, 4, 4)
    images[0, :, :, :2], images[0, :, :, 2:] = -1.0, 1.0
    images[1] = 0.05
    labels = torch.ones(2, 4, 4, dtype=torch.long)
    labels[0, 2:] = 2
    labels[1, 0, 0] = 0
    return tensor_dataset(images, labels, TARGET)


def test_hard_counts_and_normalisation(brightness_segmenter, toy_target):
    counts = confusion_counts(brightness_segmenter, toy_target, batch_size=1)
    np.testing.assert_array_equal(counts, [[4, 4, 0], [19, 4, 0]])
    a = segmentation_affinity(brightness_segmenter, toy_target)
    np.testing.assert_allclose(a.values[:, 0], [4 / 23, 19 / 23])
    np.testing.assert_allclose(a.values[:, 1], [0.5, 0.5])
    np.testing.assert_allclose(a.values[:, 2], [0.5, 0.5])  # absent: uniform
    assert a.provenance["absent_target_classes"] == ["rock"]
    assert a.source_names == ("dark", "bright") and a.method == "segmentation"
    assert a.provenance["pixels"] == 31  # the unlabeled pixel is not counted


def test_soft_counts_use_probabilities(brightness_segmenter, toy_target):
    counts = confusion_counts(brightness_segmenter, toy_target, soft=True)
    p = 1 / (1 + np.exp(-1.0))  # logits ±0.5 for the faint image
    np.testing.assert_allclose(counts[:, 0], [4 + 15 * (1 - p), 4 + 15 * p], rtol=1e-6)
    np.testing.assert_allclose(counts.sum(), 31, rtol=1e-6)


def test_low_resolution_predictions_are_upsampled(tensor_dataset):
    class HalfRes:
        def __init__(self):
            self.class_names = ["top", "bottom"]

        def predict(self, images):
            out = torch.ones(images.shape[0], 2, 2, dtype=torch.long)
            out[:, 1] = 2
            return out

        def logits(self, images):  # pragma: no cover - hard mode only
            raise AssertionError

    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, :, :] = 1
    labels[0, :, 3] = 2
    ds = tensor_dataset(torch.zeros(1, 3, 4, 4), labels, ["a", "b"])
    np.testing.assert_array_equal(confusion_counts(HalfRes(), ds), [[6, 2], [6, 2]])


def test_subsampling_is_seeded_and_bad_predictions_raise(brightness_segmenter, tensor_dataset):
    images = torch.linspace(-1, 1, 10).view(10, 1, 1, 1).expand(10, 3, 2, 2).contiguous()
    ds = tensor_dataset(images, torch.ones(10, 2, 2), ["x"])
    a = confusion_counts(brightness_segmenter, ds, max_images=4, seed=1)
    b = confusion_counts(brightness_segmenter, ds, max_images=4, seed=1)
    np.testing.assert_array_equal(a, b)
    assert a.sum() == 16

    class Broken:
        def __init__(self):
            self.class_names = ["a", "b"]

        def predict(self, images):
            return torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.long)

    with pytest.raises(AffinityError, match=r"values must be 1..2"):
        confusion_counts(Broken(), ds)


def test_registry_requires_a_segmenter(brightness_segmenter, toy_target):
    with pytest.raises(AffinityError, match="segmenter required"):
        estimate_affinity("segmentation", AffinityInputs(target_dataset=toy_target))
    a = estimate_affinity("segmentation", AffinityInputs(segmenter=brightness_segmenter,
                                                         target_dataset=toy_target), top_k=1)
    np.testing.assert_allclose(a.values[:, 0], [0.0, 1.0])


def test_transformers_segmenter_backend(tmp_path, tensor_dataset):
    """Backend (b): a tiny random-init SegFormer saved locally, via cat_models.segmenters."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    from cat_models.segmenters import HFSegmenter

    config = SegformerConfig(num_channels=3, num_encoder_blocks=2, depths=[1, 1],
                             sr_ratios=[2, 1], hidden_sizes=[8, 16], num_attention_heads=[1, 1],
                             decoder_hidden_size=16, num_labels=3,
                             id2label={0: "sky", 1: "grass", 2: "road"},
                             label2id={"sky": 0, "grass": 1, "road": 2})
    torch.manual_seed(0)
    SegformerForSemanticSegmentation(config).save_pretrained(tmp_path / "segformer")
    segmenter = HFSegmenter.from_pretrained_path(tmp_path / "segformer")
    g = torch.Generator().manual_seed(1)
    images = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    labels = torch.randint(0, 3, (3, 32, 32), generator=g)
    target = tensor_dataset(images, labels, ["sea", "lawn"])
    a = segmentation_affinity(segmenter, target, batch_size=2)
    assert a.source_names == ("sky", "grass", "road")
    predicted = segmenter.predict(images)
    expected = np.zeros((3, 2))
    for k in (1, 2):
        for l in (1, 2, 3):
            expected[l - 1, k - 1] = int(((labels == k) & (predicted == l)).sum())
    np.testing.assert_allclose(a.values, expected / expected.sum(0))
    assert a.provenance["segmenter"] == "hf-segformer:segformer"

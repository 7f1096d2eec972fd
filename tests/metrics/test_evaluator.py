"""Evaluator: FID/KID against cached real statistics + mIoU through a segmenter, seeded."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from cat_models.metrics import DEFAULT_NET_ID, Evaluator, stats_path

PALETTE = torch.tensor([[0.0, 0.0, 0.0], [0.9, -0.9, -0.9], [-0.9, 0.9, -0.9],
                        [-0.9, -0.9, 0.9], [0.9, 0.9, -0.9]])


class PaletteSegmenter:
    """Labels each pixel with the nearest palette colour (classes 1..4): an exact oracle for
    images painted with PALETTE."""

    class_names: ClassVar[list[str]] = ["w", "x", "y", "z"]
    identifier = "palette-oracle"

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        d = ((images[:, None] - PALETTE[1:, :, None, None]) ** 2).sum(2)
        return -d

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images).argmax(1) + 1


def paint(labels: torch.Tensor) -> torch.Tensor:
    return PALETTE[labels].permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def labels() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(1, 5, (6, 16, 16), generator=g)
    labels[:, :2] = 0  # unlabeled rows are ignored
    return labels


class PaletteDataset:
    """A real dataset (for FID statistics) of painted label maps, with a dataset's `files`."""

    class_names: ClassVar[list[str]] = ["w", "x", "y", "z"]

    def __init__(self, labels: torch.Tensor, root, split: str = "val") -> None:
        from cat_models.data.layouts import DatasetFiles

        self.labels = labels
        self.images = paint(labels)
        self.indices = list(range(len(labels)))
        self.size_hw = tuple(labels.shape[-2:])
        self.files = DatasetFiles(
            "palette", root, split, tuple(root / f"{i}.png" for i in self.indices),
            tuple(root / f"{i}.png" for i in self.indices), tuple(self.class_names), (0,))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i], "index": i}


@pytest.fixture(scope="module")
def evaluator(labels, feature_net, tmp_path_factory):
    root = tmp_path_factory.mktemp("palette")
    real = PaletteDataset(labels, root)
    ev = Evaluator(real, real, PaletteSegmenter(), feature_net, n_samples=6, cache_dir=root,
                   batch_size=3)
    assert stats_path(real, feature_net, root).is_file()
    return ev


def test_real_images_score_zero_fid_and_perfect_miou(evaluator):
    result = evaluator.evaluate(paint)
    assert result["fid"] == pytest.approx(0.0, abs=1e-3)
    assert result["miou"] == 1.0
    assert result["per_class_iou"] == {"w": 1.0, "x": 1.0, "y": 1.0, "z": 1.0}
    assert result["feature_net"] == DEFAULT_NET_ID
    assert result["segmenter"] == "palette-oracle"
    assert result["n_samples"] == 6 and result["n_real"] == 6


def test_swapped_classes_lower_miou_by_the_known_amount(evaluator, labels):
    from cat_models.metrics import miou

    swap = torch.tensor([0, 2, 1, 3, 4])  # the generator paints classes 1 and 2 swapped
    result = evaluator.evaluate(lambda lab: paint(swap[lab]))
    expected = miou(swap[labels], labels, 4, PaletteSegmenter.class_names)
    assert result["per_class_iou"]["w"] == 0.0 and result["per_class_iou"]["y"] == 1.0
    assert result["miou"] == pytest.approx(expected["miou"]) == pytest.approx(0.5)


def test_noise_is_seeded_and_raises_fid_and_kid(evaluator):
    def noisy(lab):
        return (paint(lab) + 0.5 * torch.randn(len(lab), 3, *lab.shape[-2:])).clamp(-1, 1)

    torch.manual_seed(123)
    first = evaluator.evaluate(noisy)
    after_first = torch.rand(1)
    second = evaluator.evaluate(noisy)
    assert first["fid"] == second["fid"] and first["kid"] == second["kid"]
    assert first["fid"] > 50.0 and first["kid"] > 0.05
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after_first)  # the caller's RNG stream is untouched


def test_bad_generator_output_and_label_maps_are_reported(evaluator, labels, feature_net,
                                                          tmp_path):
    with pytest.raises(ValueError, match=r"generate_fn returned \(3, 16, 16\)"):
        evaluator.evaluate(lambda lab: paint(lab)[0])
    real = PaletteDataset(labels, tmp_path)
    with pytest.raises(ValueError, match="label 4 but only 3 class names"):
        Evaluator(real, labels, PaletteSegmenter(), feature_net, cache_dir=tmp_path,
                  class_names=["w", "x", "y"])


def test_floor_is_held_out_real_images_at_the_same_n(labels, feature_net, tmp_path):
    real = PaletteDataset(labels, tmp_path)
    g = torch.Generator().manual_seed(1)
    other = torch.randint(1, 5, (10, 16, 16), generator=g)
    held_out = PaletteDataset(other, tmp_path, split="train")
    ev = Evaluator(real, real, PaletteSegmenter(), feature_net, n_samples=6, cache_dir=tmp_path,
                   batch_size=3, floor_dataset=held_out)
    result = ev.evaluate(paint)
    assert result["n_floor"] == 6   # n_samples of the 10 held-out images
    # The statistics' own images score 0; other real (painted) maps at the same n do not:
    # that is the small-n bias the floor shows (large at n = 6) ...
    assert result["fid"] < 1e-3 and result["fid_floor"] > 50.0
    # ... and noise-corrupted samples lie above it, KID by many of its std.
    noisy = ev.evaluate(lambda lab: (paint(lab) + torch.randn(len(lab), 3, 16, 16)
                                     ).clamp(-1, 1))
    assert noisy["fid"] > result["fid_floor"] + 20.0
    assert noisy["kid"] > noisy["kid_floor"] + 3 * noisy["kid_std"]
    assert noisy["kid_std"] > 0.0 and noisy["kid_floor_std"] >= 0.0
    assert noisy["fid_floor"] == result["fid_floor"]   # computed once


class ConfusedSegmenter(PaletteSegmenter):
    """The oracle, except that it calls every "x" pixel "w": imperfect on real images too."""

    identifier = "confused-oracle"

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        predicted = super().predict(images)
        return torch.where(predicted == 2, 1, predicted)


def test_miou_real_is_the_segmenter_on_the_real_images_of_the_same_label_maps(
        labels, feature_net, tmp_path):
    from cat_models.metrics import miou

    real = PaletteDataset(labels, tmp_path)
    # 8 samples of 6 label maps: the maps are cycled, and so must their real images be
    oracle = Evaluator(real, real, PaletteSegmenter(), feature_net, n_samples=8,
                       cache_dir=tmp_path, batch_size=3)
    assert oracle.evaluate(paint)["miou_real"] == 1.0
    confused = Evaluator(real, real, ConfusedSegmenter(), feature_net, n_samples=8,
                         cache_dir=tmp_path, batch_size=3)
    swap = torch.tensor([0, 1, 2, 4, 3])           # a generator that swaps "y" and "z"
    reproduced = confused.evaluate(paint)            # the generator returns the real images
    wrong = confused.evaluate(lambda lab: paint(swap[lab]))
    cycled = labels.repeat(2, 1, 1)[:8]
    predicted = torch.where(cycled == 2, 1, cycled)
    scores = miou(predicted, cycled, 4, PaletteSegmenter.class_names)
    expected = scores["miou"]
    assert reproduced["miou_real"] == pytest.approx(expected) and expected < 0.8
    # per class: the confused segmenter loses "x" (all called "w") on the real images too
    assert reproduced["per_class_iou_real"] == pytest.approx(scores["per_class_iou"])
    assert reproduced["per_class_iou_real"]["x"] == 0.0
    assert reproduced["per_class_iou_real"]["y"] == 1.0
    assert set(oracle.evaluate(paint)["per_class_iou_real"].values()) == {1.0}
    assert reproduced["miou"] == pytest.approx(reproduced["miou_real"])
    assert wrong["miou_real"] == reproduced["miou_real"] > wrong["miou"]
    # label maps without images have no real-image reference
    assert "per_class_iou_real" not in Evaluator(real, labels, PaletteSegmenter(), feature_net,
                                                 cache_dir=tmp_path).evaluate(paint)
    assert "miou_real" not in Evaluator(real, labels, PaletteSegmenter(), feature_net,
                                        cache_dir=tmp_path).evaluate(paint)


def test_floor_of_the_statistics_own_images_is_refused(labels, feature_net, tmp_path):
    real = PaletteDataset(labels, tmp_path)
    with pytest.raises(ValueError, match="floor_dataset holds the images of the real stat"):
        Evaluator(real, real, PaletteSegmenter(), feature_net, n_samples=6,
                  cache_dir=tmp_path, floor_dataset=PaletteDataset(labels, tmp_path))


class _TinyInception(torch.nn.Module):
    """clean-fid's file layout (`.layers`) with a 4-channel 'feature'."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def test_another_device_gets_its_own_copy_of_the_network(tmp_path):
    """A GPU trial's Evaluator loads the Inception on the trial's device; the process's shared
    CPU copy (used by the statistics and the feature affinity) must stay on the CPU."""
    from cat_models.metrics.feature_net import load_feature_net

    path = tmp_path / "tiny_inception.pt"
    torch.jit.script(_TinyInception()).save(str(path))
    cpu = load_feature_net(path)
    other = load_feature_net(path, device="meta")   # any non-CPU device; meta needs no GPU
    assert other.device.type == "meta"
    assert cpu.device.type == "cpu"
    assert load_feature_net(path).layers is cpu.layers            # the CPU copy is shared
    assert other.layers is not cpu.layers
    assert other.identifier == cpu.identifier                     # same file, same numbers
    x = torch.rand(2, 3, 8, 8) * 255
    assert cpu(x).shape == (2, 4)

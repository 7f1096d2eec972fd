"""HFSegmenter: a tiny random-init SegFormer saved with save_pretrained and loaded back offline."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from cat_models.errors import CheckpointError
from cat_models.segmenters import HFSegmenter, Segmenter, SegmenterError, load_segmenter

NAMES = ["wall", "floor", "sky", "tree"]


@pytest.fixture
def tiny_segformer(tmp_path):
    torch.manual_seed(0)
    config = SegformerConfig(
        num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
        hidden_sizes=[8, 16], patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 1],
        mlp_ratios=[2, 2], decoder_hidden_size=16, num_labels=len(NAMES),
        id2label=dict(enumerate(NAMES)), label2id={n: i for i, n in enumerate(NAMES)},
    )
    model = SegformerForSemanticSegmentation(config).eval()
    path = tmp_path / "segformer-tiny"
    model.save_pretrained(path)
    return model, path


def test_loads_from_local_path_with_id2label_names(tiny_segformer):
    _, path = tiny_segformer
    seg = load_segmenter(path)
    assert isinstance(seg, HFSegmenter) and isinstance(seg, Segmenter)
    assert seg.class_names == NAMES
    assert seg.identifier == "hf-segformer:segformer-tiny"


def test_logits_match_the_model_with_imagenet_normalisation(tiny_segformer):
    model, path = tiny_segformer
    seg = HFSegmenter.from_pretrained_path(path)
    images = torch.rand(2, 3, 40, 56) * 2 - 1
    logits = seg.logits(images)
    assert logits.shape == (2, 4, 40, 56)  # resized back to the input size
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        raw = model(pixel_values=((images + 1) / 2 - mean) / std).logits
    assert raw.shape[-2:] == (10, 14)  # SegFormer predicts at 1/4 resolution
    expected = F.interpolate(raw, size=(40, 56), mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits, expected)
    assert torch.equal(seg.predict(images), expected.argmax(1) + 1)


def test_processor_mean_std_and_input_size_are_used(tiny_segformer):
    model, path = tiny_segformer
    (path / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}))
    seg = HFSegmenter.from_pretrained_path(path, input_size=64)
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        # mean = std = 0.5 maps [0, 1] back to [-1, 1]: the model sees the images themselves
        up = F.interpolate(images, size=(64, 64), mode="bilinear", align_corners=False)
        raw = model(pixel_values=up).logits
    expected = F.interpolate(raw, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(seg.logits(images), expected, atol=1e-5, rtol=1e-5)


def test_class_names_override_and_errors(tiny_segformer, tmp_path):
    _, path = tiny_segformer
    seg = HFSegmenter.from_pretrained_path(path, class_names=["a", "b", "c", "d"])
    assert seg.class_names == ["a", "b", "c", "d"]
    with pytest.raises(SegmenterError, match="class_names has 2 names, the model predicts 4"):
        HFSegmenter.from_pretrained_path(path, class_names=["a", "b"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SegmenterError, match="no config.json"):
        load_segmenter(empty)


def test_mask2former_matches_its_semantic_post_processing(tmp_path):
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
        SwinConfig,
    )

    torch.manual_seed(0)
    backbone = SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=2, image_size=64,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(
        backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32,
        encoder_feedforward_dim=32, dim_feedforward=32, encoder_layers=1, decoder_layers=2,
        num_queries=4, num_attention_heads=2, num_labels=3, use_pretrained_backbone=False,
        id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2})
    model = Mask2FormerForUniversalSegmentation(config).eval()
    model.save_pretrained(tmp_path / "m2f")
    seg = load_segmenter(tmp_path / "m2f")
    assert seg.identifier == "hf-mask2former:m2f" and seg.class_names == ["a", "b", "c"]
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    assert seg.logits(images).shape == (2, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        out = model(pixel_values=((images + 1) / 2 - mean) / std)
    reference = Mask2FormerImageProcessor().post_process_semantic_segmentation(
        out, target_sizes=[(64, 64)] * 2)
    assert torch.equal(seg.predict(images), torch.stack(reference) + 1)


def test_weights_of_another_config_name_the_tensors(tiny_segformer):
    """Today transformers raises a long `size mismatch` report (or re-initialises missing
    weights with only a log line); the loader names the folder and the first tensors."""
    _, path = tiny_segformer
    config = json.loads((path / "config.json").read_text())
    config["hidden_sizes"] = [8, 32]           # the second stage is wider than the weights
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        load_segmenter(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: does not match a segmentation model (segformer as its "
                          "config.json describes it): 25 tensor(s) of another shape (")
    assert "decode_head.linear_projections.1.proj.weight: checkpoint [16, 16] vs model " \
           "[16, 32]" in msg and "… 22 more" in msg


def test_missing_weights_are_refused_not_reinitialised(tiny_segformer):
    _, path = tiny_segformer
    from safetensors.torch import load_file, save_file

    weights = load_file(path / "model.safetensors")
    dropped = sorted(k for k in weights if k.startswith("decode_head.classifier"))
    save_file({k: v for k, v in weights.items() if k not in dropped}, path / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=rf"2 missing from the checkpoint "
                                              rf"\({dropped[0]}, {dropped[1]}\)"):
        HFSegmenter.from_pretrained_path(path)


def test_truncated_weights_file_is_named(tiny_segformer):
    _, path = tiny_segformer
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=rf"{path}: transformers could not load a "
                                              r"segmentation model \(Error while deserializing"):
        load_segmenter(path)


def test_unreadable_config_is_named(tiny_segformer):
    _, path = tiny_segformer
    (path / "config.json").write_text('{"model_type": "segformer", ')
    with pytest.raises(SegmenterError, match=rf"{path}: config.json cannot be used \("):
        load_segmenter(path)
    (path / "config.json").write_text('{"model_type": "no-such-model"}')
    with pytest.raises(SegmenterError, match=rf"{path}: config.json cannot be used \(.*"
                                             r"no-such-model"):
        load_segmenter(path)

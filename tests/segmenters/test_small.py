"""SmallSegmenter: shapes, label convention, save/load round trip, training on a known task."""

from __future__ import annotations

import pytest
import torch

from cat_models.errors import CheckpointError
from cat_models.segmenters import (
    Segmenter,
    SegmenterError,
    SmallSegmenter,
    SmallSegmenterConfig,
    class_weights,
    load_segmenter,
    train_small_segmenter,
)


def test_logits_and_predict_follow_the_label_convention():
    torch.manual_seed(0)
    seg = SmallSegmenter(SmallSegmenterConfig(num_classes=5), [f"c{k}" for k in range(5)])
    images = torch.rand(2, 3, 30, 46) * 2 - 1  # odd sizes: pooled with ceil_mode, resized back
    logits = seg.logits(images)
    assert logits.shape == (2, 5, 30, 46)
    assert not logits.requires_grad
    predicted = seg.predict(images)
    assert predicted.dtype == torch.long and predicted.shape == (2, 30, 46)
    assert torch.equal(predicted, logits.argmax(1) + 1)  # channel k-1 = label k
    assert 1 <= int(predicted.min()) and int(predicted.max()) <= 5
    assert isinstance(seg, Segmenter)


def test_logits_keep_training_mode_and_reject_bad_shapes():
    seg = SmallSegmenter(SmallSegmenterConfig(num_classes=2), ["a", "b"]).train()
    seg.logits(torch.zeros(1, 3, 8, 8))
    assert seg.training
    with pytest.raises(SegmenterError, match=r"\[B, 3, H, W\]"):
        seg.logits(torch.zeros(3, 8, 8))


def test_config_and_names_are_validated():
    with pytest.raises(SegmenterError, match="num_classes"):
        SmallSegmenterConfig(num_classes=0)
    with pytest.raises(SegmenterError, match="3 class_names for num_classes=2"):
        SmallSegmenter(SmallSegmenterConfig(num_classes=2), ["a", "b", "c"])


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(1)
    seg = SmallSegmenter(SmallSegmenterConfig(num_classes=3, widths=(4, 8, 8, 16)),
                         ["x", "y", "z"])
    seg.train_info = {"iterations": 7}
    path = seg.save(tmp_path / "sub" / "seg.pt")
    loaded = load_segmenter(path)
    assert isinstance(loaded, SmallSegmenter)
    assert loaded.class_names == ["x", "y", "z"]
    assert loaded.config == seg.config
    assert loaded.train_info == {"iterations": 7}
    assert loaded.identifier == seg.identifier and loaded.identifier.startswith("small-unet:")
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(loaded.logits(images), seg.logits(images))


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(SegmenterError, match="no such segmenter"):
        load_segmenter(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(SegmenterError, match=r"other\.pt: not a SmallSegmenter file"):
        load_segmenter(other)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"garbage\.pt: segmenter file is not a torch "
                                              r"checkpoint \(starts with bytes 6e 6f 74 20"):
        load_segmenter(garbage)


def test_truncated_or_mismatched_file_names_the_tensors(tmp_path):
    seg = SmallSegmenter(SmallSegmenterConfig(num_classes=3), ["x", "y", "z"])
    path = seg.save(tmp_path / "seg.pt")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pt: segmenter file is truncated or "
                                              r"damaged: its zip archive cannot be read"):
        load_segmenter(truncated)
    # a header that claims other widths than the tensors have
    blob = torch.load(path, weights_only=True)
    blob["arch"]["widths"] = [8, 16, 64]
    torch.save(blob, tmp_path / "wide.pt")
    with pytest.raises(CheckpointError) as err:
        load_segmenter(tmp_path / "wide.pt")
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'wide.pt'}: does not match the SmallSegmenter")
    assert "(widths [8, 16, 64])" in msg
    # the bottleneck block (64 instead of 32 channels) and the first decoder block read it
    assert "net.down.2.0.weight: checkpoint [32, 16, 3, 3] vs model [64, 16, 3, 3]" in msg
    n_diff = sum(1 for k, v in SmallSegmenter(SmallSegmenterConfig(3, (8, 16, 64)), list("xyz"))
                 .state_dict().items() if v.shape != seg.state_dict()[k].shape)
    assert f"{n_diff} tensor(s) of another shape" in msg


def test_class_weights_favour_rare_classes(stripes):
    w = class_weights(stripes)
    counts = torch.zeros(2)
    for item in stripes.items:
        counts += torch.bincount(item["label"].flatten(), minlength=3)[1:].float()
    expected = 1 / torch.sqrt(counts / counts.sum())
    torch.testing.assert_close(w, expected / expected.mean())


def test_training_learns_a_known_task_and_is_seeded(stripes):
    torch.set_num_threads(1)
    seg = train_small_segmenter(stripes, iterations=60, batch_size=8, lr=1e-2, seed=3,
                                progress=False)
    again = train_small_segmenter(stripes, iterations=5, batch_size=8, lr=1e-2, seed=3,
                                  progress=False)
    same = train_small_segmenter(stripes, iterations=5, batch_size=8, lr=1e-2, seed=3,
                                 progress=False)
    assert again.identifier == same.identifier  # same seed -> same weights
    assert seg.train_info["iterations"] == 60 and seg.train_info["train_images"] == 24
    held_out = type(stripes)(16, seed=99)
    images = torch.stack([it["image"] for it in held_out.items])
    labels = torch.stack([it["label"] for it in held_out.items])
    predicted = seg.predict(images)
    labeled = labels > 0
    accuracy = (predicted[labeled] == labels[labeled]).float().mean()
    assert accuracy > 0.95


def test_training_rejects_empty_or_bad_arguments(stripes):
    with pytest.raises(SegmenterError, match="empty"):
        train_small_segmenter([], iterations=1)
    with pytest.raises(SegmenterError, match="iterations"):
        train_small_segmenter(stripes, iterations=0)


def test_training_progress_keeps_to_the_bar_interval_in_a_log():
    """In a log (no terminal) the bar writes one line per TQDM_MININTERVAL; the loss shown
    beside it must not force a redraw on every step (it once wrote one per iteration)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from conftest import StripesDataset\n"
        "from cat_models.segmenters import SmallSegmenterConfig, train_small_segmenter\n"
        "train_small_segmenter(StripesDataset(8), iterations=60, batch_size=2, progress=True,\n"
        "    config=SmallSegmenterConfig(num_classes=2, widths=(4, 4, 4, 4)))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    env.update(TQDM_MININTERVAL="30", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent)], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    redraws = [part for part in proc.stderr.replace("\r", "\n").split("\n")
               if "train segmenter" in part]
    assert redraws, proc.stderr
    assert len(redraws) <= 3, f"{len(redraws)} redraws for 60 iterations"
    assert "60/60" in redraws[-1] and "loss=" in redraws[-1]

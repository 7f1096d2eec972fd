"""Source pretraining CLI -> source checkpoint -> training-free CAT samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cat_models.data.synthetic import SOURCE_CLASSES
from cat_models.oasis import load_source, sample_images, training_free_generator
from cat_models.oasis.pretrain import main


def test_pretrain_cli_writes_source_usable_training_free(small_benchmark, tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "source.pt"
    rc = main(["--out", str(out), "--iterations", "2", "--resolution", "32",
               "--batch-size", "2", "--data-root", str(small_benchmark.source_root),
               "--report-every", "1"])
    assert rc == 0 and out.is_file()
    assert '"iteration": 2' in capsys.readouterr().out
    source = load_source(out)
    assert source.class_names == SOURCE_CLASSES and source.cfg.resolution == (32, 32)
    assert not torch.equal(source.ema.fc.weight, source.generator.fc.weight)  # EMA lags
    a = np.zeros((12, 3))
    a[[0, 1, 3], [0, 1, 2]] = 1.0                    # target 1->sky, 2->grass, 3->water
    g = training_free_generator(source, a)
    labels = torch.randint(0, 4, (3, 32, 32))
    images = sample_images(g, labels, seed=0)
    assert images.shape == (3, 3, 32, 32) and torch.isfinite(images).all()
    source_labels = torch.tensor([0, 1, 2, 4])[labels]
    assert torch.allclose(images, sample_images(source.ema, source_labels, seed=0), atol=1e-5)
    with pytest.raises(ValueError, match="cat-oasis-source"):
        torch.save({"G": {}}, tmp_path / "other.pt")
        load_source(tmp_path / "other.pt")

"""FID fixtures: the default feature net (loaded once) and a few real 32 px benchmark images.

The Inception forward is the cost (~3-5 images/s on one core): tests use 12 images a set.
"""

from __future__ import annotations

import pytest
import torch

N_IMAGES = 12


@pytest.fixture(scope="session")
def feature_net():
    from cat_models.metrics import load_feature_net

    return load_feature_net()


@pytest.fixture(scope="session")
def target_val(small_benchmark):
    from cat_models.data import open_dataset

    return open_dataset("folder", small_benchmark.target_root, "val", resolution=32)


@pytest.fixture(scope="session")
def val_images(target_val) -> torch.Tensor:
    return torch.stack([target_val[i]["image"] for i in range(N_IMAGES)])


@pytest.fixture(scope="session")
def val_features(val_images, feature_net):
    from cat_models.metrics import inception_features

    return inception_features(val_images, feature_net)

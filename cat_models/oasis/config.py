"""OasisConfig: every hyper-parameter of an OASIS model and its training, as typed data.

Defaults are the OASIS paper's (Schönfeld et al. 2021, `boschresearch/OASIS` config.py); the
presets reproduce the released ADE20K / COCO-Stuff / Cityscapes configurations (docs/oasis.md,
"Official checkpoints") and the tiny models the embedded benchmark uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cat_models.configs import ConfigData

# Differentiable augmentations of everything the discriminator sees (`d_augment`), in the
# order they are applied; `cat_models.oasis.augment` implements them.
D_AUGMENT_POLICIES = ("color", "translation", "cutout")


def parse_augment_policy(policy: str) -> tuple[str, ...]:
    """"translation,color" -> ("color", "translation") (application order); "" -> ()."""
    names = [p.strip() for p in str(policy).split(",") if p.strip()]
    unknown = sorted(set(names) - set(D_AUGMENT_POLICIES))
    if unknown:
        raise ValueError(f"d_augment: unknown polic{'ies' if len(unknown) > 1 else 'y'} "
                         f"{unknown}; choose from {list(D_AUGMENT_POLICIES)} "
                         "(comma-separated, '' for none)")
    return tuple(p for p in D_AUGMENT_POLICIES if p in names)


@dataclass(frozen=True)
class OasisConfig(ConfigData):
    """Architecture + optimisation settings. `resolution` is (height, width)."""

    resolution: tuple[int, int] = (256, 256)
    channels_g: int = 64          # G widths = channels_g * [16, 16, 16, 8, 4, 2, 1] (6 blocks)
    channels_d: int = 64          # D widths = channels_d * [2, 2, 4, 4, 8, 8], last up block 1x
    num_res_blocks: int = 6       # G SPADE blocks and D down/up blocks (official: 6)
    z_dim: int = 64               # 3D noise channels, concatenated before the one-hot map
    spade_hidden: int = 128
    spade_ks: int = 3
    param_free_norm: str = "batch"   # "batch" (official syncbatch) | "instance"
    spectral_norm: bool = True
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    betas: tuple[float, float] = (0.0, 0.999)
    batch_size: int = 32
    lambda_labelmix: float = 10.0
    ema_decay: float = 0.9999
    class_balancing: bool = True
    ignore_unlabeled: bool = True   # label 0 gets weight 0 in the real/G loss (contain_dontcare)
    amp: bool = True                # used on CUDA only
    # Augment D's inputs (real, fake, LabelMix, and the label maps alike) with these
    # comma-separated D_AUGMENT_POLICIES; "" = none (OASIS and the CAT paper).
    d_augment: str = ""

    def __post_init__(self) -> None:
        res = self.resolution
        if isinstance(res, int):
            res = (res, res)
        object.__setattr__(self, "resolution", tuple(int(r) for r in res))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        h, w = self.resolution
        scale = 2 ** self.num_res_blocks  # D halves the map num_res_blocks times
        if not (32 <= h <= 1024 and 32 <= w <= 1024):
            raise ValueError(f"OasisConfig.resolution: expected 32..1024 per side, got {res}")
        if h % scale or w % scale:
            raise ValueError(f"OasisConfig.resolution {self.resolution}: both sides must be "
                             f"divisible by 2**num_res_blocks = {scale} (the U-Net discriminator's depth)")
        if self.param_free_norm not in ("batch", "instance"):
            raise ValueError(f"OasisConfig.param_free_norm: 'batch' or 'instance', "
                             f"got {self.param_free_norm!r}")
        object.__setattr__(self, "d_augment",
                           ",".join(parse_augment_policy(self.d_augment)))
        if self.num_res_blocks < 2:
            raise ValueError(f"OasisConfig.num_res_blocks: at least 2, got {self.num_res_blocks}")

    @property
    def latent_size(self) -> tuple[int, int]:
        """Spatial size of the first generator feature map (official: crop / 32)."""
        scale = 2 ** (self.num_res_blocks - 1)
        return self.resolution[0] // scale, self.resolution[1] // scale

    def generator_widths(self) -> list[int]:
        n = self.num_res_blocks
        return [self.channels_g * min(16, 2 ** (n - i)) for i in range(n + 1)]

    def discriminator_widths(self) -> list[int]:
        n = self.num_res_blocks
        return [3] + [self.channels_d * min(8, 2 * 2 ** (i // 2)) for i in range(n)]

    def discriminator_layer_names(self) -> list[str]:
        """The U-Net discriminator's layers in FreezeD order: body_down.*, body_up.*, then
        the head `layer_up_last` (num_res_blocks down and up blocks each)."""
        n = self.num_res_blocks
        return ([f"body_down.{i}" for i in range(n)] + [f"body_up.{i}" for i in range(n)]
                + ["layer_up_last"])


PRESETS: dict[str, OasisConfig] = {
    "official_ade20k": OasisConfig(resolution=(256, 256)),
    "official_coco": OasisConfig(resolution=(256, 256)),
    "official_cityscapes": OasisConfig(resolution=(256, 512), lr_g=4e-4, lambda_labelmix=5.0,
                                       ema_decay=0.999, batch_size=20),
    # ~1.9M G + ~0.9M D at 64x64, batch 8, sized for 2 CPU cores (0.69 s per G+D step
    # measured on an idle 2-core machine; benchmarks/RESULTS_oasis.md).
    "bench64": OasisConfig(resolution=(64, 64), channels_g=12, channels_d=18, num_res_blocks=5,
                           z_dim=16, spade_hidden=32, batch_size=8, ema_decay=0.999),
    # The embedded benchmark's default (studies/*.yaml): 32x32, 4 blocks, ~1.5M G + 0.3M D,
    # ~0.25 s per G+D step at batch 8 on one core of this 2-core machine. EMA decay 0.99:
    # runs are 10^2-10^3 steps here, and with 0.999 the average still weighs the first
    # (untrained) steps heavily (measured: source EMA samples 4.7% mIoU vs 25% for G).
    # Learning rates 5e-4 (G) / 1e-3 (D), not OASIS's 1e-4 / 4e-4, which are tuned for 10^5
    # steps of a 60M-parameter model: after 1,500 pretraining steps a real-image segmenter
    # finds 75% mIoU on the EMA samples, against 16% with OASIS's rates
    # (benchmarks/RESULTS_harness.md). Trials finetune with `training.lr_g/lr_d` instead.
    "bench32": OasisConfig(resolution=(32, 32), channels_g=16, channels_d=16, num_res_blocks=4,
                           z_dim=16, spade_hidden=32, batch_size=8, ema_decay=0.99,
                           lr_g=5e-4, lr_d=1e-3),
}


def preset(name: str, **overrides: Any) -> OasisConfig:
    """A named preset, optionally with fields replaced."""
    if name not in PRESETS:
        raise KeyError(f"OASIS preset {name!r} unknown; choose from {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)

"""PitiConfig: every architecture hyper-parameter of a PITI model (mask encoder + U-Net).

The defaults are the official mask-to-image base model (PITI-Synthesis/PITI, commit d9f7481,
`script_util.py` defaults with `learn_sigma=True`, `mode=coco`); `PRESETS` adds the official
64 -> 256 upsampler and the embedded-scale model, all from the same class. Diffusion settings
(noise schedule, guidance, sampler) are not network settings and live with the diffusion code.

Mask layout (the one place it is defined): `num_classes` = N, the source or target dataset's
class count as in `cat_models.data` (labels 1..N; label 0 = unlabeled). The network's mask
input has N + 1 channels: channel k - 1 is class k, channel N is the "empty" mask used for
classifier-free guidance; an unlabeled pixel is the all-zero vector (see `model.label_mask`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cat_models.configs import ConfigData

# Official `create_model`: the channel multipliers implied by the image size.
DEFAULT_CHANNEL_MULT = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}


@dataclass(frozen=True)
class PitiConfig(ConfigData):
    """One PITI network. Resolutions are square side lengths in pixels."""

    resolution: int = 64                 # image side the U-Net denoises
    num_classes: int = 182               # N (COCO-Stuff: 182 classes + unlabeled)
    upsampler: bool = False              # input = noisy image ⊕ upsampled low-res image
    low_resolution: int | None = None    # upsampler only: side of its low-res input (64)
    learn_sigma: bool = True             # 6 output channels: ε and the variance interpolation
    # Decoder (guided-diffusion / GLIDE U-Net).
    model_channels: int = 192
    channel_mult: tuple[int, ...] | None = None   # None: the official one for `resolution`
    num_res_blocks: int = 3
    attention_resolutions: tuple[int, ...] = (32, 16, 8)   # feature-map sides with attention
    num_head_channels: int = 64
    dropout: float = 0.1
    norm_groups: int = 32                # GroupNorm groups (official: 32 everywhere)
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    # Mask encoder (CNN -> tokens -> transformer).
    mask_resolution: int = 256           # side the mask is resized to (official: 256)
    cnn_channels: tuple[int, ...] = (32, 64, 128, 256, 512)  # conv1 width, then stride-2 convs
    xf_width: int = 512
    xf_layers: int = 8
    xf_heads: int = 8
    xf_final_ln: bool = True
    prompt_count: int = 0                # deep visual prompts per transformer layer (0 = off)
    # Embedded-scale deviation from PITI (off in the official presets): the encoder's conv1
    # features (the mask after A, at mask_resolution) also enter the U-Net, through a 3×3
    # conv (`decoder.mask_in`) added to its input conv, so the layout reaches every pixel
    # directly instead of only through cross-attention over the token grid.
    unet_mask_features: bool = False
    prompt_seed: int = 0
    # CAT (paper §3.3): C_S when an affinity layer maps this model's num_classes = C_T target
    # classes onto the C_S source classes its conv1 reads; None = no affinity layer.
    source_classes: int | None = None

    def __post_init__(self) -> None:
        for name in ("attention_resolutions", "cnn_channels"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if self.channel_mult is None:
            if self.resolution not in DEFAULT_CHANNEL_MULT:
                raise ValueError(f"PitiConfig.channel_mult: no official default for resolution "
                                 f"{self.resolution} (known: {sorted(DEFAULT_CHANNEL_MULT)}); "
                                 "give channel_mult")
            object.__setattr__(self, "channel_mult", DEFAULT_CHANNEL_MULT[self.resolution])
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))
        self._check()

    def _check(self) -> None:
        def fail(field: str, msg: str) -> None:
            raise ValueError(f"PitiConfig.{field}: {msg}")

        if self.num_classes < 1:
            fail("num_classes", f"at least 1, got {self.num_classes}")
        down = 2 ** (len(self.channel_mult) - 1)
        if self.resolution % down:
            fail("resolution", f"{self.resolution} not divisible by 2**(len(channel_mult)-1)"
                 f" = {down}")
        if self.upsampler and not self.low_resolution:
            fail("low_resolution", "an upsampler needs the side of its low-res input")
        if not self.upsampler and self.low_resolution is not None:
            fail("low_resolution", "only an upsampler takes a low-res input")
        widths = [self.model_channels * m for m in self.channel_mult]
        for w in widths:
            if w % self.norm_groups:
                fail("norm_groups", f"{self.norm_groups} groups do not divide width {w}")
        for side in self.attention_resolutions:
            if side > self.resolution or self.resolution % side:
                fail("attention_resolutions", f"{side} is not a feature-map side of a "
                     f"{self.resolution}-px U-Net")
            ds = self.resolution // side
            if ds & (ds - 1):
                fail("attention_resolutions", f"{side} px is not a U-Net level of a "
                     f"{self.resolution}-px model (levels halve the side)")
            if ds > down:
                fail("attention_resolutions", f"{side} px is below the U-Net's lowest level "
                     f"({self.resolution // down} px)")
            if widths[ds.bit_length() - 1] % self.num_head_channels:
                fail("num_head_channels", f"{self.num_head_channels} does not divide width "
                     f"{widths[ds.bit_length() - 1]} at {side} px")
        if len(self.cnn_channels) < 1:
            fail("cnn_channels", "at least one width")
        if self.mask_resolution % self.cnn_stride:
            fail("mask_resolution", f"{self.mask_resolution} not divisible by the CNN's stride "
                 f"{self.cnn_stride}")
        for c in self.cnn_channels:
            if c < 1:
                fail("cnn_channels", f"widths must be positive, got {self.cnn_channels}")
        if self.xf_width % self.xf_heads:
            fail("xf_heads", f"{self.xf_heads} heads do not divide xf_width {self.xf_width}")
        if self.source_classes is not None and self.source_classes < 1:
            fail("source_classes", f"None or at least 1, got {self.source_classes}")
        if self.prompt_count < 0:
            fail("prompt_count", f"0 or more, got {self.prompt_count}")
        if self.unet_mask_features and self.upsampler:
            fail("unet_mask_features", "only for a base model (an upsampler gets the layout "
                 "from its low-res image)")
        if not 0.0 <= self.dropout < 1.0:
            fail("dropout", f"expected [0, 1), got {self.dropout}")

    # Derived quantities (one definition each).
    @property
    def in_channels(self) -> int:
        """Image channels into the U-Net: 3, or 6 for an upsampler (x_t ⊕ upsampled low-res)."""
        return 6 if self.upsampler else 3

    @property
    def out_channels(self) -> int:
        return 6 if self.learn_sigma else 3

    @property
    def mask_channels(self) -> int:
        """N classes + the empty channel (the mask layout in the module docstring)."""
        return self.num_classes + 1

    @property
    def conv1_classes(self) -> int:
        """Classes conv1 reads: the source's behind an affinity layer, else num_classes."""
        return self.num_classes if self.source_classes is None else self.source_classes

    @property
    def cnn_stride(self) -> int:
        """The CNN's total downsampling: every conv after conv1 has stride 2."""
        return 2 ** (len(self.cnn_channels) - 1)

    @property
    def token_grid(self) -> int:
        return self.mask_resolution // self.cnn_stride

    @property
    def num_tokens(self) -> int:
        """Mask tokens (token_grid²) + the cls token."""
        return self.token_grid ** 2 + 1

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    @property
    def attention_downsample(self) -> tuple[int, ...]:
        """`attention_resolutions` as U-Net downsampling rates (official `attention_ds`)."""
        return tuple(self.resolution // side for side in self.attention_resolutions)


PRESETS: dict[str, PitiConfig] = {
    # base_mask.pt: 64x64, 192 channels, mult (1, 2, 3, 4), 3 res blocks, 338 M values.
    "official_base": PitiConfig(),
    # upsample_mask.pt: 64 -> 256, mult (1, 1, 2, 2, 4, 4), 2 res blocks, 6 input channels.
    "official_upsampler": PitiConfig(resolution=256, upsampler=True, low_resolution=64,
                                     num_res_blocks=2),
    # Embedded scale (2 CPU cores; num_classes = the embedded benchmark's 12 source classes):
    # images generated directly at 32x32 by this one base model,
    # no upsampler (the benchmark's images are 32 px, so a second stage would only add cost).
    # The mask stays at 32 px and a 3-level CNN (32 -> 16 -> 8) gives an 8x8 token grid;
    # a width-128, 2-layer transformer; a 32-channel U-Net with levels at 32/16/8 px, one res
    # block per level and attention (the mask tokens as extra keys/values) at 16 and 8 px.
    # 2.2 M parameters; ~20 GFLOP per training step at batch 8, about 1 s on one core
    # (2 res blocks per level: 2.9 M, 27 GFLOP, ~2 s).
    "embedded": PitiConfig(resolution=32, num_classes=12, model_channels=32,
                           channel_mult=(1, 2, 2), num_res_blocks=1,
                           attention_resolutions=(16, 8), num_head_channels=32, norm_groups=8,
                           mask_resolution=32, cnn_channels=(32, 64, 128), xf_width=128,
                           xf_layers=2, xf_heads=4),
    # An optional second stage at the embedded scale: 32 -> 64 px.
    "embedded_upsampler": PitiConfig(resolution=64, num_classes=12, upsampler=True,
                                     low_resolution=32, model_channels=32,
                                     channel_mult=(1, 1, 2, 2), num_res_blocks=1,
                                     attention_resolutions=(16, 8), num_head_channels=32,
                                     norm_groups=8, mask_resolution=32,
                                     cnn_channels=(32, 64, 128), xf_width=128, xf_layers=2,
                                     xf_heads=4),
}


def preset(name: str, **overrides: Any) -> PitiConfig:
    """A named preset, optionally with fields replaced (e.g. `num_classes`, `prompt_count`)."""
    if name not in PRESETS:
        raise KeyError(f"PITI preset {name!r} unknown; choose from {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)

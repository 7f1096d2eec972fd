"""PITI's decoder: the guided-diffusion / GLIDE U-Net conditioned on the mask encoder.

Structure and parameter names follow the official model (PITI, commit d9f7481), so its
`decoder.*` tensors load with strict keys:
- `time_embed` (Linear, SiLU, Linear) on the sinusoidal timestep embedding [cos; sin];
  `transformer_proj` maps the encoder's cls token to the same size and is added to it.
- `input_blocks`: a 3×3 conv, then per level `num_res_blocks` × (ResBlock [+ AttentionBlock])
  and, between levels, a down-sampling ResBlock (`resblock_updown`); `middle_block` =
  ResBlock, AttentionBlock, ResBlock; `output_blocks` mirror them with skip connections and
  up-sampling ResBlocks; `out` = GroupNorm + SiLU + zero-initialised 3×3 conv.
- `mask_in` (not in PITI; only with `config.unet_mask_features`, an embedded-scale option):
  a 3×3 conv of the encoder's conv1 features, added to the input conv's output.
- ResBlock: `in_layers` (GroupNorm+SiLU, -, conv), `emb_layers` (SiLU, Linear to 2×width:
  scale and shift for `use_scale_shift_norm`), `out_layers` (GroupNorm, SiLU, Dropout,
  zero-init conv), `skip_connection` (1×1 conv when the width changes).
- AttentionBlock: `norm`, `qkv` (1-d conv, per-head [q k v] packing), `encoder_kv` (the mask
  tokens -> extra keys and values, prepended to the block's own), zero-init `proj_out`.
GroupNorm runs in float32 (as the official `GroupNorm32`), whatever the activations' dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn

from cat_models.piti.config import PitiConfig


def zero_module(module: nn.Module) -> nn.Module:
    """Zero-initialised output layers: every residual branch starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class GroupNormAct(nn.GroupNorm):
    """GroupNorm in float32, optionally followed by SiLU (official `normalization(swish=)`)."""

    def __init__(self, groups: int, channels: int, act: bool) -> None:
        super().__init__(groups, channels)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x.float()).to(x.dtype)
        return F.silu(y) if self.act else y


class Resample(nn.Module):
    """Nearest ×2 up-sampling or 2×2 average-pool down-sampling, optionally with a conv
    (`conv` / `op`, as the official `Upsample` / `Downsample`)."""

    def __init__(self, channels: int, up: bool, use_conv: bool) -> None:
        super().__init__()
        self.up = up
        self.use_conv = use_conv
        if use_conv and up:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        elif use_conv:
            self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            return self.conv(x) if self.use_conv else x
        return self.op(x) if self.use_conv else F.avg_pool2d(x, 2)


class ResBlock(nn.Module):
    def __init__(self, channels: int, emb_channels: int, out_channels: int, cfg: PitiConfig,
                 up: bool = False, down: bool = False) -> None:
        super().__init__()
        g, ss = cfg.norm_groups, cfg.use_scale_shift_norm
        self.scale_shift = ss
        self.in_layers = nn.Sequential(GroupNormAct(g, channels, True), nn.Identity(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if self.updown:
            self.h_upd = Resample(channels, up, use_conv=False)
            self.x_upd = Resample(channels, up, use_conv=False)
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if ss else out_channels))
        self.out_layers = nn.Sequential(
            GroupNormAct(g, out_channels, not ss), nn.SiLU() if ss else nn.Identity(),
            nn.Dropout(cfg.dropout),
            zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.scale_shift:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Spatial self-attention whose keys/values also include the mask tokens (`encoder_kv`)."""

    def __init__(self, channels: int, cfg: PitiConfig, encoder_channels: int | None) -> None:
        super().__init__()
        self.heads = channels // cfg.num_head_channels
        self.norm = GroupNormAct(cfg.norm_groups, channels, False)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        if encoder_channels is not None:
            self.encoder_kv = nn.Conv1d(encoder_channels, 2 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor, encoder_out: torch.Tensor | None = None) -> torch.Tensor:
        b, c, *spatial = x.shape
        ch = c // self.heads
        qkv = self.qkv(self.norm(x).reshape(b, c, -1))
        q, k, v = qkv.reshape(b, self.heads, 3 * ch, -1).split(ch, dim=2)
        if encoder_out is not None:
            ek, ev = self.encoder_kv(encoder_out).reshape(b, self.heads, 2 * ch, -1).split(
                ch, dim=2)
            k, v = torch.cat([ek, k], dim=-1), torch.cat([ev, v], dim=-1)
        # [b, heads, ch, tokens] -> attention over tokens; scale 1/sqrt(ch) as the official.
        a = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2),
                                           v.transpose(-1, -2))
        h = self.proj_out(a.transpose(-1, -2).reshape(b, c, -1))
        return x + h.reshape(b, c, *spatial)


class TimestepSequential(nn.Sequential):
    """Passes the time embedding to ResBlocks and the mask tokens to AttentionBlocks."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor,  # type: ignore[override]
                encoder_out: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, AttentionBlock):
                x = layer(x, encoder_out)
            else:
                x = layer(x)
        return x


class PitiUNet(nn.Module):
    """x [B, in_channels, H, W], t [B], cls token [B, W_xf], mask tokens [B, W_xf, L]
    -> [B, out_channels, H, W]."""

    def __init__(self, cfg: PitiConfig) -> None:
        super().__init__()
        self.model_channels = mc = cfg.model_channels
        emb = cfg.time_embed_dim
        enc = cfg.xf_width
        attn_ds = set(cfg.attention_downsample)
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.transformer_proj = nn.Linear(enc, emb)

        def res(ch_in: int, ch_out: int, **kw: bool) -> ResBlock:
            return ResBlock(ch_in, emb, ch_out, cfg, **kw)

        def sampler(ch: int, up: bool) -> nn.Module:
            if cfg.resblock_updown:
                return res(ch, ch, up=up, down=not up)
            return Resample(ch, up, use_conv=True)

        ch = mc * cfg.channel_mult[0]
        self.input_blocks = nn.ModuleList(
            [TimestepSequential(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
        # Not in PITI (config.unet_mask_features): the encoder's conv1 features, added to the
        # input conv's output.
        self.mask_in = (nn.Conv2d(cfg.cnn_channels[0], ch, 3, padding=1)
                        if cfg.unet_mask_features else None)
        skip_channels = [ch]
        ds = 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res(ch, mc * mult)]
                ch = mc * mult
                if ds in attn_ds:
                    layers.append(AttentionBlock(ch, cfg, enc))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_channels.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(TimestepSequential(sampler(ch, up=False)))
                skip_channels.append(ch)
                ds *= 2
        self.middle_block = TimestepSequential(res(ch, ch), AttentionBlock(ch, cfg, enc),
                                               res(ch, ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_channels.pop(), mc * mult)]
                ch = mc * mult
                if ds in attn_ds:
                    layers.append(AttentionBlock(ch, cfg, enc))
                if level and i == cfg.num_res_blocks:
                    layers.append(sampler(ch, up=True))
                    ds //= 2
                self.output_blocks.append(TimestepSequential(*layers))
        self.out = nn.Sequential(GroupNormAct(cfg.norm_groups, ch, True), nn.Identity(),
                                 zero_module(nn.Conv2d(ch, cfg.out_channels, 3, padding=1)))

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        # [cos; sin] with frequencies exp(-ln(10^4) i / half): the official embedding.
        sinusoid = get_timestep_embedding(t, self.model_channels, flip_sin_to_cos=True,
                                          downscale_freq_shift=0)
        return self.time_embed(sinusoid)

    def forward(self, x: torch.Tensor, t: torch.Tensor, xf_proj: torch.Tensor,
                xf_out: torch.Tensor, mask_features: torch.Tensor | None = None
                ) -> torch.Tensor:
        """`mask_features` [B, cnn_channels[0], H, W]: required iff `mask_in` exists."""
        if (mask_features is None) != (self.mask_in is None):
            raise ValueError("PitiUNet: mask_features must be given exactly when the U-Net "
                             "was built with unet_mask_features")
        emb = self.time_embedding(t)
        emb = emb + self.transformer_proj(xf_proj).to(emb.dtype)
        h, skips = x, []
        for i, block in enumerate(self.input_blocks):
            h = block(h, emb, xf_out)
            if i == 0 and self.mask_in is not None:
                h = h + self.mask_in(mask_features.to(h.dtype))
            skips.append(h)
        h = self.middle_block(h, emb, xf_out)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, xf_out)
        return self.out(h)

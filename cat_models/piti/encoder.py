"""PITI's semantic mask encoder: CNN -> tokens + cls token -> transformer (paper §3.3).

Layout and parameter names follow the official mask-to-image model (PITI, commit d9f7481), so
its `encoder.*` tensors load with strict keys:
- `cnn`: `conv1` 7×7 -> cnn_channels[0], then one 3×3 stride-2 conv per further width, each
  followed by `norm{i}` (InstanceNorm, affine) and LeakyReLU 0.2; then `conv{n+1}` 3×3 to
  `xf_width` with no norm (official: conv1..conv5 + conv6, 256 px mask -> 16×16 tokens).
- The token map is flattened row-major, `positional_embedding[:, 1:]` is added, and the cls
  token (`cls_token + positional_embedding[:, :1]`) is appended *last*.
- `transformer.resblocks.*`: GLIDE's pre-norm blocks (`ln_1`, `attn.c_qkv`, `attn.c_proj`,
  `ln_2`, `mlp.c_fc`, `mlp.c_proj`, GELU); `c_qkv` packs q, k, v per head ([q_h k_h v_h] for
  each head h in turn), not PyTorch's [Q; K; V].
- `final_ln`; outputs `xf_proj` = the cls token (-> the decoder's time embedding) and `xf_out`
  = the mask tokens [B, width, L] (-> extra keys/values of every decoder attention block).
  `encode` also returns conv1's features, which only a `unet_mask_features` model (an
  embedded-scale deviation, config.py) feeds to its U-Net.

Additions for CAT (absent from the official files, so they never disturb a strict load):
- one-hot input: the mask's N + 1 channels (classes, empty) plus an unlabeled indicator
  (1 - Σ mask, computed on the input map) feed `conv1`; `palette.fold_palette` makes such a
  conv1 from the official RGB one.
- `affinity` (`AffinityLayer`, when `config.source_classes` is set): the class affinity
  matrix A applied to the mask first (target -> source one-hot, paper §3.3).
- `prompts` [layers, P, width]: deep visual prompt tuning (Jia et al. 2022, paper §3.3): P
  learned tokens are prepended to every transformer layer's input and dropped from its output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cat_models.piti.config import PitiConfig


class XfAttention(nn.Module):
    """Multi-head self-attention with GLIDE's per-head [q k v] packing of `c_qkv`."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.c_qkv = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, width = x.shape
        qkv = self.c_qkv(x).view(b, n, self.heads, 3 * width // self.heads)
        q, k, v = (t.transpose(1, 2) for t in qkv.split(width // self.heads, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.c_proj(out.transpose(1, 2).reshape(b, n, width))


class XfMLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class XfBlock(nn.Module):
    """Pre-norm residual attention block (CLIP / GLIDE `ResidualAttentionBlock`)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = XfAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = XfMLP(width)
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(XfBlock(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
        """`prompts` [layers, P, width]: layer i sees [prompts[i]; x] and returns x only."""
        for i, block in enumerate(self.resblocks):
            if prompts is None:
                x = block(x)
            else:
                p = prompts[i].unsqueeze(0).expand(x.shape[0], -1, -1).to(x.dtype)
                x = block(torch.cat([p, x], dim=1))[:, p.shape[1]:]
        return x


class MaskCNN(nn.Module):
    """conv1 (7×7) + norm, stride-2 3×3 convs + norms, then the output conv to `out_width`."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], out_width: int) -> None:
        super().__init__()
        self.depth = len(widths)
        prev = in_channels
        for i, width in enumerate(widths, start=1):
            k, stride = (7, 1) if i == 1 else (3, 2)
            setattr(self, f"conv{i}", nn.Conv2d(prev, width, k, stride, padding=k // 2))
            setattr(self, f"norm{i}", nn.InstanceNorm2d(width, affine=True))
            prev = width
        setattr(self, f"conv{self.depth + 1}", nn.Conv2d(prev, out_width, 3, 1, padding=1))

    def last_block_names(self) -> tuple[str, ...]:
        """The last CNN block: the last stride-2 conv + its norm and the output conv, i.e. the
        layers at the token resolution (official: conv5, norm5, conv6). With a 1-level CNN it
        is the output conv alone (conv1 reads the mask and is never part of it)."""
        n = self.depth
        return (f"conv{n}", f"norm{n}", f"conv{n + 1}") if n > 1 else (f"conv{n + 1}",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The token map [B, out_width, h, w]."""
        return self.features(x)[1]

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(conv1's features [B, widths[0], H, W], the token map [B, out_width, h, w])."""
        first = None
        for i in range(1, self.depth + 1):
            x = getattr(self, f"norm{i}")(getattr(self, f"conv{i}")(x))
            x = F.leaky_relu(x, 0.2)
            first = x if first is None else first
        return first, getattr(self, f"conv{self.depth + 1}")(x)


class AffinityLayer(nn.Module):
    """Target mask [B, C_T + 1, H, W] -> source mask [B, C_S + 1, H, W] (paper §3.3).

    `weight` is the (C_S + 1)×(C_T + 1) matrix block-diag(A, 1): A (C_S×C_T, columns summing
    to 1) on the classes, the empty channel mapped to the empty channel. All of it trains
    (the empty entries start at the block layout). Unlabeled pixels stay all-zero.
    """

    def __init__(self, values: torch.Tensor) -> None:
        super().__init__()
        cs, ct = values.shape
        full = torch.zeros(cs + 1, ct + 1, dtype=torch.float32, device=values.device)
        full[:cs, :ct] = values
        full[cs, ct] = 1.0
        self.weight = nn.Parameter(full)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return torch.einsum("st,bthw->bshw", self.weight.to(mask.dtype), mask)


def unlabeled_indicator(mask: torch.Tensor) -> torch.Tensor:
    """1 where a pixel carries no class and is not empty (all-zero one-hot), else 0."""
    return 1.0 - mask.sum(dim=1, keepdim=True)


class MaskEncoder(nn.Module):
    """Mask [B, N+1, Hm, Wm] (or, with `rgb_input`, the official coloured map [B, 3, ...])
    -> (xf_proj [B, width], xf_out [B, width, tokens])."""

    def __init__(self, cfg: PitiConfig, rgb_input: bool = False) -> None:
        super().__init__()
        if rgb_input and cfg.source_classes is not None:
            raise ValueError("MaskEncoder: an RGB-input encoder cannot carry an affinity layer "
                             "(fold the palette first)")
        self.rgb_input = rgb_input
        width = cfg.xf_width
        # conv1 reads [mask (classes, empty) ; unlabeled indicator] of the classes it knows.
        in_channels = 3 if rgb_input else cfg.conv1_classes + 2
        self.cnn = MaskCNN(in_channels, cfg.cnn_channels, width)
        self.transformer = Transformer(width, cfg.xf_layers, cfg.xf_heads)
        self.final_ln = nn.LayerNorm(width) if cfg.xf_final_ln else None
        scale = width ** -0.5   # CLIP ViT's init for class and positional embeddings
        self.cls_token = nn.Parameter(torch.randn(1, 1, width) * scale)
        self.positional_embedding = nn.Parameter(torch.randn(1, cfg.num_tokens, width) * scale)
        self.affinity: AffinityLayer | None = None
        if cfg.source_classes is not None:
            # Placeholder values (uniform columns); `transfer.cat_model` sets the real A.
            self.affinity = AffinityLayer(
                torch.full((cfg.source_classes, cfg.num_classes), 1.0 / cfg.source_classes))
        self.prompts: nn.Parameter | None = None
        if cfg.prompt_count:
            self.add_prompts(cfg.prompt_count, cfg.prompt_seed)

    def add_prompts(self, count: int, seed: int = 0) -> None:
        """Fresh deep prompts (replacing any), drawn from `seed`; count 0 removes them.

        Initialised as VPT does for its prompts: uniform ±sqrt(6 / (fan_in + width)), with
        fan_in that of the token-producing output conv, so they start on the tokens' scale.
        """
        if count == 0:
            self.prompts = None
            return
        width = self.positional_embedding.shape[-1]
        out_conv = getattr(self.cnn, f"conv{self.cnn.depth + 1}")
        fan_in = out_conv.in_channels * math.prod(out_conv.kernel_size)
        bound = math.sqrt(6.0 / (fan_in + width))
        gen = torch.Generator().manual_seed(seed)
        layers = len(self.transformer.resblocks)
        values = torch.rand(layers, count, width, generator=gen) * 2 * bound - bound
        ref = self.positional_embedding
        self.prompts = nn.Parameter(values.to(device=ref.device, dtype=ref.dtype))

    @property
    def prompt_count(self) -> int:
        return 0 if self.prompts is None else self.prompts.shape[1]

    def cnn_input(self, mask: torch.Tensor) -> torch.Tensor:
        if self.rgb_input:
            return mask
        unlabeled = unlabeled_indicator(mask)   # of the input map: A never changes it
        if self.affinity is not None:
            mask = self.affinity(mask)
        return torch.cat([mask, unlabeled], dim=1)

    def forward(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode(mask)[1:]

    def encode(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(conv1's features [B, cnn_channels[0], Hm, Wm], xf_proj, xf_out): the first is
        what a `unet_mask_features` U-Net reads besides the tokens."""
        spatial, x = self.cnn.features(self.cnn_input(mask))
        x = x.flatten(2).transpose(1, 2)
        pos = self.positional_embedding
        if x.shape[1] + 1 != pos.shape[1]:
            raise ValueError(f"mask encoder: {x.shape[1]} mask tokens, but the positional "
                             f"embedding has {pos.shape[1] - 1}; give the mask at the "
                             "configured mask_resolution")
        cls = (self.cls_token + pos[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([x + pos[:, 1:], cls], dim=1)
        x = self.transformer(x, self.prompts)
        if self.final_ln is not None:
            x = self.final_ln(x)
        return spatial, x[:, -1], x[:, :-1].transpose(1, 2)

"""The denoising UNet of our DDPM: sinusoidal timestep embedding, residual blocks conditioned on it, and
self-attention at the low resolutions.

Decoder blocks are ``up.<level>.<block>`` modules (level 0 = the lowest resolution, counting upwards), so a
feature-extraction config names them as strings (``"up.0.1"``) and forward hooks find them by name.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetSpec:
    in_channels: int = 1  # 1 = grayscale, 3 = RGB
    base_width: int = 32
    width_mults: tuple[int, ...] = (1, 2, 2)  # one per resolution level, top (full size) first
    blocks_per_level: int = 1
    attention_levels: tuple[int, ...] = (2,)  # indices into width_mults with self-attention
    groups: int = 8  # GroupNorm groups
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if not self.width_mults:
            raise ValueError("width_mults must name at least one level")
        bad = [a for a in self.attention_levels if not 0 <= a < len(self.width_mults)]
        if bad:
            raise ValueError(f"attention_levels {bad} out of range for {len(self.width_mults)} levels")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> UNetSpec:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) -> (B, dim) as in the transformer position encoding."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with the timestep added in between; 1x1 skip when the width changes."""

    def __init__(self, c_in: int, c_out: int, t_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in, groups), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.t_proj = nn.Linear(t_dim, c_out)
        self.norm2, self.conv2 = _norm(c_out, groups), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.t_proj(F.silu(t_emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over all positions of a (low-resolution) feature map, residual."""

    def __init__(self, channels: int, groups: int, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads if channels % heads == 0 else 1
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        o = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.out(o.transpose(-1, -2).reshape(b, c, h, w))


class UNetBlock(nn.Module):
    """A residual block, optionally followed by self-attention (one hookable unit)."""

    def __init__(self, c_in: int, c_out: int, t_dim: int, spec: UNetSpec, attention: bool) -> None:
        super().__init__()
        self.res = ResBlock(c_in, c_out, t_dim, spec.groups, spec.dropout)
        self.attn = SelfAttention(c_out, spec.groups) if attention else None

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        x = self.res(x, t_emb)
        return self.attn(x) if self.attn is not None else x


class UNet(nn.Module):
    """epsilon-prediction UNet: (x_t (B, C, H, W), t (B,)) -> predicted noise (B, C, H, W).

    H and W must be divisible by 2 ** (levels - 1).
    """

    def __init__(self, spec: UNetSpec) -> None:
        super().__init__()
        self.spec = spec
        widths = [spec.base_width * m for m in spec.width_mults]
        self.t_dim = 4 * spec.base_width
        self.t_mlp = nn.Sequential(nn.Linear(spec.base_width, self.t_dim), nn.SiLU(), nn.Linear(self.t_dim, self.t_dim))
        self.stem = nn.Conv2d(spec.in_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [widths[0]]
        c = widths[0]
        for level, w in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(spec.blocks_per_level):
                blocks.append(UNetBlock(c, w, self.t_dim, spec, level in spec.attention_levels))
                c = w
                skips.append(c)
            self.down.append(blocks)
            if level < len(widths) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        last = len(widths) - 1
        self.mid = nn.ModuleList([UNetBlock(c, c, self.t_dim, spec, True), UNetBlock(c, c, self.t_dim, spec, False)])
        # decoder: level 0 is the lowest resolution; each level consumes blocks_per_level + 1 skips
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, level in enumerate(reversed(range(len(widths)))):
            blocks = nn.ModuleList()
            for _ in range(spec.blocks_per_level + 1):
                blocks.append(UNetBlock(c + skips.pop(), widths[level], self.t_dim, spec,
                                        level in spec.attention_levels))
                c = widths[level]
            self.up.append(blocks)
            if i < last:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.head = nn.Sequential(_norm(c, spec.groups), nn.SiLU(), nn.Conv2d(c, spec.in_channels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    @property
    def levels(self) -> int:
        return len(self.spec.width_mults)

    def decoder_block_names(self) -> list[str]:
        """Names of the hookable decoder blocks, lowest resolution first (``up.<level>.<block>``)."""
        return [f"up.{i}.{j}" for i, blocks in enumerate(self.up) for j in range(len(blocks))]

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        factor = 2 ** (self.levels - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"UNet input height and width must be multiples of {factor}, got {tuple(x.shape[-2:])}")
        t_emb = self.t_mlp(timestep_embedding(t, self.spec.base_width))
        h = self.stem(x)
        skips = [h]
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, t_emb)
                skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                skips.append(h)
        for block in self.mid:
            h = block(h, t_emb)
        for i, blocks in enumerate(self.up):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), t_emb)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.head(h)

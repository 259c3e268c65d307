"""The teacher's fusion: DDPM features -> FFT noise filter -> per-level projection -> dynamic cross-attention
into the detector's pyramid levels.

- :class:`FFTFilter`: ``irfft2(rfft2(x) * mask)`` with a real mask over the half spectrum, initialised as a
  Gaussian low-pass (learnable or fixed). It suppresses the high-frequency noise the DDPM's x_t leaves in its
  activations.
- :class:`DynamicCrossAttention`: queries from the detector's features, keys and values from the (filtered,
  projected) DDPM features, multi-head, with 2-D sinusoidal positions added to queries and keys so that
  attention can be local. A gate computed from both (global average of the detector features and of the
  attended signal -> per-channel sigmoid) scales what is added back: ``F + gate * attended``. The output
  projection starts at zero, so an untrained teacher behaves exactly like its detector.

Both call the kernels through :mod:`training.teacher.ops` (``impl="kernel"``) or the pure-torch reference
(``impl="reference"``); tests hold the two equal.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.teacher import ops


def gaussian_lowpass(h: int, w: int, sigma: float) -> torch.Tensor:
    """(h, w // 2 + 1) mask: exp(-(fy^2 + fx^2) / (2 sigma^2)), frequencies in cycles per pixel."""
    fy = torch.fft.fftfreq(h).view(-1, 1)
    fx = torch.fft.rfftfreq(w).view(1, -1)
    return torch.exp(-(fy ** 2 + fx ** 2) / (2 * sigma ** 2)).float()


class FFTFilter(nn.Module):
    def __init__(self, grid: int, sigma: float = 0.25, learnable: bool = True, impl: str = "kernel") -> None:
        super().__init__()
        self.grid, self.impl = grid, impl
        mask = gaussian_lowpass(grid, grid, sigma)
        if learnable:
            self.mask = nn.Parameter(mask)
        else:
            self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.grid, self.grid):
            raise ValueError(f"FFTFilter was built for {self.grid}x{self.grid} maps, got {tuple(x.shape[-2:])}")
        return ops.fft_filter(x, self.mask, impl=self.impl)


def sincos_2d(channels: int, h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """(channels, h, w) fixed 2-D sinusoidal position code (half the channels for y, half for x)."""
    quarter = max(1, channels // 4)
    freqs = 1.0 / (100.0 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    ys = torch.arange(h, device=device, dtype=torch.float32)[:, None] * freqs[None]
    xs = torch.arange(w, device=device, dtype=torch.float32)[:, None] * freqs[None]
    code = torch.cat([ys.sin()[:, None].expand(h, w, quarter), ys.cos()[:, None].expand(h, w, quarter),
                      xs.sin()[None].expand(h, w, quarter), xs.cos()[None].expand(h, w, quarter)], dim=-1)
    code = F.pad(code, (0, max(0, channels - code.shape[-1])))[..., :channels]
    return code.permute(2, 0, 1).contiguous()


class DynamicCrossAttention(nn.Module):
    def __init__(self, channels: int, heads: int = 4, gate: bool = True, impl: str = "kernel") -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} must be divisible by heads {heads}")
        if channels // heads > 128:
            raise ValueError(f"head dim {channels // heads} > 128 (the kernel's limit): use more heads")
        self.channels, self.heads, self.impl = channels, heads, impl
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.gate = nn.Sequential(nn.Linear(2 * channels, channels // 2 or 1), nn.SiLU(),
                                  nn.Linear(channels // 2 or 1, channels)) if gate else None
        self._pos: dict[tuple, torch.Tensor] = {}

    def _position(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        key = (h, w, device)
        if key not in self._pos:
            self._pos[key] = sincos_2d(self.channels, h, w, device)
        return self._pos[key]

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.reshape(b, self.heads, c // self.heads, h * w).transpose(-1, -2)

    def forward(self, det: torch.Tensor, ddpm: torch.Tensor) -> torch.Tensor:
        """det (B, C, H, W) detector features; ddpm (B, C, h, w) projected DDPM features -> (B, C, H, W)."""
        b, c, h, w = det.shape
        pos_q = self._position(h, w, det.device)
        pos_k = self._position(*ddpm.shape[-2:], det.device)
        q = self._heads(self.q(det + pos_q))
        k = self._heads(self.k(ddpm + pos_k))
        v = self._heads(self.v(ddpm))
        attended = ops.cross_attention(q, k, v, impl=self.impl)  # (B, heads, H*W, C/heads)
        attended = self.out(attended.transpose(-1, -2).reshape(b, c, h, w))
        if self.gate is None:
            return det + attended
        g = torch.sigmoid(self.gate(torch.cat([det.mean(dim=(2, 3)), attended.mean(dim=(2, 3))], dim=1)))
        return det + g[:, :, None, None] * attended


class Fusion(nn.Module):
    """DDPM features (B, C_ddpm, g, g) at stride 8 -> rewritten detector levels ``levels`` (0 = stride 8)."""

    def __init__(self, ddpm_channels: int, grid: int, level_channels: list[int], levels: list[int], heads: int = 4,
                 fft_filter: bool = True, learnable_filter: bool = True, filter_sigma: float = 0.25,
                 gate: bool = True, impl: str = "kernel") -> None:
        super().__init__()
        self.levels, self.grid = list(levels), grid
        self.filter = FFTFilter(grid, filter_sigma, learnable_filter, impl) if fft_filter else None
        self.project = nn.ModuleDict({str(lv): nn.Sequential(nn.Conv2d(ddpm_channels, level_channels[lv], 1),
                                                             nn.GroupNorm(math.gcd(8, level_channels[lv]),
                                                                          level_channels[lv]), nn.SiLU())
                                      for lv in self.levels})
        self.attend = nn.ModuleDict({str(lv): DynamicCrossAttention(level_channels[lv], heads, gate, impl)
                                     for lv in self.levels})

    def set_impl(self, impl: str) -> None:
        """Switch every op between the kernels and the pure-torch reference."""
        for m in self.modules():
            if hasattr(m, "impl"):
                m.impl = impl

    def forward(self, feats: list[torch.Tensor], ddpm: torch.Tensor) -> list[torch.Tensor]:
        if ddpm.shape[-2:] != (self.grid, self.grid):
            raise ValueError(f"DDPM features must be {self.grid}x{self.grid} (the stride-8 grid), got "
                             f"{tuple(ddpm.shape[-2:])}")
        filtered = self.filter(ddpm) if self.filter is not None else ddpm
        out = list(feats)
        for lv in self.levels:
            src = filtered if lv == 0 else F.avg_pool2d(filtered, 2 ** lv)
            out[lv] = self.attend[str(lv)](feats[lv], self.project[str(lv)](src))
        return out

"""ResVAE: a residual convolutional VAE over raw DDPM feature maps (channel and optional 2x spatial compression).

Inputs are standardised per channel (the statistics are buffers of the model, so a checkpoint is self-contained):
``encode`` takes raw features and returns the latent mean and log-variance; ``decode`` returns standardised
features, which is what the teacher consumes (the raw-feature ablation standardises with the same statistics).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ResVAESpec:
    in_channels: int
    latent_channels: int = 16
    hidden: int = 96
    blocks: int = 2
    downsample: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


class ResidualBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(math.gcd(8, c), c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1),
                                  nn.GroupNorm(math.gcd(8, c), c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResVAE(nn.Module):
    def __init__(self, spec: ResVAESpec) -> None:
        super().__init__()
        self.spec = spec
        h = spec.hidden
        enc: list[nn.Module] = [nn.Conv2d(spec.in_channels, h, 1)]
        enc += [ResidualBlock(h) for _ in range(spec.blocks)]
        if spec.downsample:
            enc += [nn.Conv2d(h, h, 3, stride=2, padding=1), ResidualBlock(h)]
        enc += [nn.GroupNorm(math.gcd(8, h), h), nn.SiLU(), nn.Conv2d(h, 2 * spec.latent_channels, 1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(spec.latent_channels, h, 3, padding=1)]
        if spec.downsample:
            dec += [ResidualBlock(h), nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(h, h, 3, padding=1)]
        dec += [ResidualBlock(h) for _ in range(spec.blocks)]
        dec += [nn.GroupNorm(math.gcd(8, h), h), nn.SiLU(), nn.Conv2d(h, spec.in_channels, 1)]
        self.decoder = nn.Sequential(*dec)
        self.register_buffer("mean", torch.zeros(spec.in_channels))
        self.register_buffer("std", torch.ones(spec.in_channels))

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(1e-4))

    def standardize(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw.float() - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)

    def destandardize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std.view(1, -1, 1, 1) + self.mean.view(1, -1, 1, 1)

    def encode(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if raw.shape[1] != self.spec.in_channels:
            raise ValueError(f"ResVAE expects {self.spec.in_channels} feature channels, got {raw.shape[1]}")
        if self.spec.downsample and (raw.shape[-1] % 2 or raw.shape[-2] % 2):
            raise ValueError(f"ResVAE with downsample needs even feature maps, got {tuple(raw.shape[-2:])}")
        mu, logvar = self.encoder(self.standardize(raw)).chunk(2, dim=1)
        return mu, logvar.clamp(-20, 10)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent -> standardised features."""
        return self.decoder(z.float())

    def loss(self, raw: torch.Tensor, kl_weight: float, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, dict[str, float]]:
        mu, logvar = self.encode(raw)
        z = mu + torch.randn(mu.shape, generator=generator) * (0.5 * logvar).exp()
        recon = F.mse_loss(self.decode(z), self.standardize(raw))
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()
        return recon + kl_weight * kl, {"recon": float(recon), "kl": float(kl)}

"""What the teacher reads per image: its DDPM features, looked up by image id and moved with the image.

Latents are decoded by the frozen ResVAE into standardised stride-8 feature maps (or, when ``resvae.enabled`` is
false, raw features are standardised with the training statistics), then moved by the same geometric
augmentation as the image (:func:`warp_features`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from training.data.records import Dataset
from training.evaluation.torch_predict import ForwardFn
from training.repository.latents import load_resvae
from training.repository.store import FeatureRepository

DEFAULT_CACHE_MB = 2048.0


class FeatureSource:
    """Image ids -> standardised DDPM feature maps (B, C, g, g): latents through the frozen ResVAE decoder, or
    raw features standardised with the training statistics.

    The decoder is frozen, so an image's maps are the same every epoch: the first ``cache_mb`` MiB of decoded
    maps are kept in memory (NEU-DET's 1152 training images take 1 GiB) instead of decoded again every batch.
    """

    def __init__(self, repo: FeatureRepository, resvae_weights: str | Path,
                 cache_mb: float = DEFAULT_CACHE_MB) -> None:
        self.repo = repo
        self._cache: dict[str, torch.Tensor] = {}
        self._cache_budget, self._cache_bytes = int(cache_mb * 2**20), 0
        self.resvae = load_resvae(resvae_weights)
        for p in self.resvae.parameters():
            p.requires_grad_(False)
        self.array = "latents" if "latents" in repo.names else "features"
        if self.array == "features":
            self.channels = repo.shape("features")[0]
        else:
            self.channels = self.resvae.spec.in_channels
        if self.resvae.spec.in_channels != self.channels:
            raise ValueError(f"{repo.root}: {self.channels} feature channels, the ResVAE expects "
                             f"{self.resvae.spec.in_channels}")
        self.grid = int(repo.meta["grid"])

    @torch.no_grad()
    def __call__(self, image_ids: list[str], device: torch.device | None = None) -> torch.Tensor:
        missing = [i for i in dict.fromkeys(image_ids) if i not in self._cache]
        fresh: dict[str, torch.Tensor] = {}
        if missing:
            rows = torch.from_numpy(self.repo.get(self.array, missing)).float()
            decoded = self.resvae.decode(rows) if self.array == "latents" else self.resvae.standardize(rows)
            for image_id, maps in zip(missing, decoded):
                fresh[image_id] = maps
                size = maps.numel() * maps.element_size()
                if self._cache_bytes + size <= self._cache_budget:
                    self._cache[image_id] = maps.clone()  # its own storage, not a view of the batch
                    self._cache_bytes += size
        feats = torch.stack([self._cache[i] if i in self._cache else fresh[i] for i in image_ids])
        return feats.to(device) if device is not None else feats


def warp_features(feats: torch.Tensor, affine: torch.Tensor, canvas_size: int) -> torch.Tensor:
    """Move feature maps covering the canvas by ``affine`` (B, 2, 3), the canvas-pixel map from the original to
    the augmented canvas (as applied to the image); outside the original canvas is zero (the mean feature)."""
    b = feats.shape[0]
    full = torch.zeros(b, 3, 3, dtype=torch.float64, device=feats.device)
    full[:, :2] = affine.to(torch.float64)
    full[:, 2, 2] = 1.0
    if torch.allclose(full, torch.eye(3, dtype=torch.float64, device=feats.device).expand(b, 3, 3)):
        return feats
    to_norm = torch.tensor([[2.0 / canvas_size, 0, -1], [0, 2.0 / canvas_size, -1], [0, 0, 1]], dtype=torch.float64,
                           device=feats.device)
    theta = to_norm @ torch.linalg.inv(full) @ torch.linalg.inv(to_norm)  # output (augmented) -> input (original)
    grid = F.affine_grid(theta[:, :2].to(feats.dtype), list(feats.shape), align_corners=False)
    return F.grid_sample(feats, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def tile_features(feats: torch.Tensor, owner: torch.Tensor, affine: torch.Tensor, region: torch.Tensor,
                  batch_size: int, canvas_size: int) -> torch.Tensor:
    """Feature maps of an augmented batch from those of its source canvases: tile ``t`` (feats[t], (C, g, g)) is
    moved by ``affine[t]`` and fills the cells of item ``owner[t]`` whose centres lie in ``region[t]``
    (x0, y0, x1, y1, canvas px); a plain item is one tile covering its whole canvas."""
    warped = warp_features(feats, affine, canvas_size)
    g = feats.shape[-1]
    centres = (torch.arange(g, device=feats.device, dtype=feats.dtype) + 0.5) * (canvas_size / g)
    x0, y0, x1, y1 = (region[:, i, None] for i in range(4))
    inside_x = (centres[None] >= x0) & (centres[None] < x1)  # (T, g)
    inside_y = (centres[None] >= y0) & (centres[None] < y1)
    cells = (inside_y[:, :, None] & inside_x[:, None, :]).to(feats.dtype)  # (T, g, g)
    out = torch.zeros(batch_size, *feats.shape[1:], dtype=feats.dtype, device=feats.device)
    return out.index_add_(0, owner, warped * cells[:, None])


class FeatureLookupMixin:
    """Shared by the teacher and distillation trainers: each item's augmentation matrix, and the feature lookup."""

    source: FeatureSource
    train_set: Dataset
    val_set: Dataset
    input_size: int

    def dataset_options(self) -> dict[str, Any]:
        return {"with_affine": True}

    def batch_features(self, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        if "tile_index" not in batch:
            return self.source([self.train_set.records[int(i)].image_id for i in batch["index"]], device)
        used = batch["tile_index"] >= 0  # (B, 4)
        owner = used.nonzero()[:, 0]
        ids = [self.train_set.records[int(i)].image_id for i in batch["tile_index"][used]]
        return tile_features(self.source(ids, device), owner.to(device), batch["tile_affine"][used].to(device),
                             batch["tile_region"][used].to(device), len(batch["index"]), self.input_size)


def with_features(source: FeatureSource) -> ForwardFn:
    """``predict_records(forward=...)`` for a teacher: each batch's DDPM features looked up by image id."""
    return lambda model, x, records: model(x, source([r.image_id for r in records], x.device))

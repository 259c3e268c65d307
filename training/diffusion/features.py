"""Stage ``features``: DDPM denoising activations of every image, stored as the raw feature repository.

For each image: x_0 (the DDPM's view of the detector canvas), one shared noise draw, x_t for every configured t,
one UNet pass per t with forward hooks on the configured decoder blocks; each activation is resized to the
detector's stride-8 grid (``input_size / 8``) and all of them are concatenated along channels:
``C = len(timesteps) * sum(channels of the hooked blocks)``. Stored as float16 rows of a
:class:`~training.repository.FeatureRepository` (array ``features``), written in atomic, resumable chunks.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from training.config import FeaturesConfig
from training.data.records import Record
from training.data.torch_dataset import read_image
from training.diffusion.ddpm import NoiseSchedule, ddpm_input, load_ddpm
from training.diffusion.unet import UNet
from training.repository.store import FeatureRepository, RepositoryWriter, open_if_built

log = logging.getLogger(__name__)


def resize_to_grid(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Area-average when shrinking, bilinear when enlarging."""
    if x.shape[-1] == grid and x.shape[-2] == grid:
        return x
    if x.shape[-1] > grid:
        return F.adaptive_avg_pool2d(x, grid)
    return F.interpolate(x, size=(grid, grid), mode="bilinear", align_corners=False)


class FeatureExtractor:
    """Hooks ``blocks`` of a DDPM UNet and turns a batch of DDPM inputs into stride-8 feature maps."""

    def __init__(self, unet: UNet, schedule: NoiseSchedule, timesteps: Sequence[int], blocks: Sequence[str],
                 grid: int) -> None:
        known = unet.decoder_block_names()
        unknown = [b for b in blocks if b not in known]
        if unknown:
            raise ValueError(f"features.blocks {unknown} are not decoder blocks of this UNet (it has {known})")
        bad_t = [t for t in timesteps if not 0 <= t < schedule.timesteps]
        if bad_t:
            raise ValueError(f"features.timesteps {bad_t} outside [0, {schedule.timesteps})")
        self.unet, self.schedule = unet.eval(), schedule
        self.timesteps, self.blocks, self.grid = list(timesteps), list(blocks), grid
        self._acts: dict[str, torch.Tensor] = {}
        self._handles = [unet.get_submodule(name).register_forward_hook(self._hook(name)) for name in self.blocks]
        widths = {name: unet.get_submodule(name).res.conv2.out_channels for name in self.blocks}
        self.channels = len(self.timesteps) * sum(widths.values())

    def _hook(self, name: str):
        def save(_module, _inputs, output: torch.Tensor) -> None:
            self._acts[name] = output
        return save

    def close(self) -> None:
        for h in self._handles:
            h.remove()

    @torch.no_grad()
    def __call__(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_0 (B, c, s, s) in [-1, 1] and one noise draw per image -> (B, C, grid, grid) float32."""
        parts = []
        for t in self.timesteps:
            tt = torch.full((len(x0),), t, dtype=torch.long)
            self._acts.clear()
            self.unet(self.schedule.q_sample(x0, tt, noise), tt)
            parts += [resize_to_grid(self._acts[name], self.grid) for name in self.blocks]
        return torch.cat(parts, dim=1)


def image_noise(seed: int, image_id: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The image's noise draw: a function of (seed, image id) only, so chunking and resuming do not change it."""
    digest = int.from_bytes(hashlib.sha256(f"{seed}:{image_id}".encode()).digest()[:8], "little")
    return torch.randn(shape, generator=torch.Generator().manual_seed(digest))


def build_feature_repository(ddpm_weights: str | Path, records: list[Record], input_size: int, cfg: FeaturesConfig,
                             out: str | Path, seed: int = 0, build_key: str = "") -> FeatureRepository:
    """Write (or resume, or reuse when already built with ``build_key``) the raw feature repository."""
    existing = open_if_built(out, build_key)
    if existing is not None:
        return existing
    unet, schedule, meta = load_ddpm(ddpm_weights)
    if meta["canvas_size"] != input_size:
        raise ValueError(f"{ddpm_weights}: DDPM was trained on {meta['canvas_size']} px canvases, the detector "
                         f"uses {input_size}")
    grid = input_size // 8
    extractor = FeatureExtractor(unet, schedule, cfg.timesteps, cfg.blocks, grid)
    ids = [r.image_id for r in records]
    writer = RepositoryWriter(out, ids, {"features": ((extractor.channels, grid, grid), "float16")}, build_key,
                              meta={"kind": "raw_features", "ddpm": str(ddpm_weights), "timesteps": cfg.timesteps,
                                    "blocks": cfg.blocks, "grid": grid, "input_size": input_size, "seed": seed})
    size, channels = meta["image_size"], meta["unet"]["in_channels"]
    try:
        todo = writer.remaining
        bar = tqdm(total=len(ids), initial=todo.start, desc="features", mininterval=1.0)
        for start in range(todo.start, len(ids), cfg.chunk_size):
            chunk = records[start:start + cfg.chunk_size]
            rows = []
            for b in range(0, len(chunk), cfg.batch_size):
                batch = chunk[b:b + cfg.batch_size]
                x0 = torch.from_numpy(np.stack([ddpm_input(read_image(str(r.image_path)), input_size, size, channels)
                                                for r in batch]))
                noise = torch.stack([image_noise(seed, r.image_id, x0.shape[1:]) for r in batch])
                rows.append(extractor(x0, noise).numpy().astype(np.float16))
                bar.update(len(batch))
            writer.write_chunk(start, {"features": np.concatenate(rows)})
        bar.close()
    finally:
        extractor.close()
    return writer.finish()

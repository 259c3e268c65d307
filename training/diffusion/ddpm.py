"""Stage ``ddpm``: a denoising diffusion model (epsilon prediction, T-step noise schedule) trained on the
training images, with EMA weights, per-epoch resume and a PNG grid of samples.

The DDPM sees exactly the detector's geometry: each image is letterboxed onto the detector's canvas, then
resized to ``ddpm.image_size`` (and turned gray when ``ddpm.channels == 1``). So a position in a DDPM
activation map corresponds to the same position on the detector's canvas, which the feature stage relies on.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from diffdefect_edge.preprocess import letterbox
from training.config import DDPMConfig
from training.data.records import Record
from training.data.torch_dataset import read_image
from training.diffusion.unet import UNet, UNetSpec
from training.engine.checkpoint import load_strict, read_kind_meta, save_train_state, save_weights
from training.engine.ema import ModelEMA, ratio_decay
from training.engine.loop import TrainLoop
from training.engine.resume import resume_state
from training.engine.schedule import WarmupCosine
from training.engine.threads import apply_thread_budget

log = logging.getLogger(__name__)


class NoiseSchedule:
    """beta_t for t = 0..T-1 and the cumulative products used by q(x_t | x_0) and the reverse step."""

    def __init__(self, timesteps: int = 1000, kind: str = "linear") -> None:
        if kind == "linear":
            betas = torch.linspace(1e-4, 0.02, timesteps, dtype=torch.float64)
        elif kind == "cosine":
            s = 0.008
            steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
            f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        else:
            raise ValueError(f"schedule must be 'linear' or 'cosine', got {kind!r}")
        self.timesteps, self.kind = timesteps, kind
        self.betas = betas.float()
        self.alphas_cumprod = torch.cumprod(1 - betas, 0).float()

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
        if int(t.max()) >= self.timesteps or int(t.min()) < 0:
            raise ValueError(f"timesteps must be in [0, {self.timesteps}), got {t.tolist()}")
        abar = self.alphas_cumprod.to(x0.device)[t].view(-1, 1, 1, 1)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def ddpm_input(image: np.ndarray, canvas_size: int, image_size: int, channels: int) -> np.ndarray:
    """BGR uint8 frame -> float32 (C, s, s) in [-1, 1]: letterbox onto the detector canvas, resize, gray/RGB."""
    canvas, _ = letterbox(image, canvas_size)
    if image_size != canvas_size:
        canvas = cv2.resize(canvas, (image_size, image_size), interpolation=cv2.INTER_AREA)
    if channels == 1:
        arr = cv2.cvtColor(canvas, cv2.COLOR_BGR2GRAY)[None]
    else:
        arr = canvas[:, :, ::-1].transpose(2, 0, 1)
    return arr.astype(np.float32) / 127.5 - 1.0


def load_ddpm_inputs(records: list[Record], canvas_size: int, cfg: DDPMConfig) -> torch.Tensor:
    return torch.from_numpy(np.stack([ddpm_input(read_image(str(r.image_path)), canvas_size, cfg.image_size,
                                                 cfg.channels) for r in records]))


def unet_spec(cfg: DDPMConfig) -> UNetSpec:
    return UNetSpec(in_channels=cfg.channels, base_width=cfg.base_width, width_mults=tuple(cfg.width_mults),
                    blocks_per_level=cfg.blocks_per_level, attention_levels=tuple(cfg.attention_levels))


@torch.no_grad()
def sample(model: UNet, schedule: NoiseSchedule, num: int, size: int, steps: int, seed: int = 0) -> torch.Tensor:
    """Ancestral sampling on ``steps`` evenly respaced timesteps (steps == T is the plain DDPM sampler)."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    ts = np.unique(np.linspace(0, schedule.timesteps - 1, steps).round().astype(np.int64))[::-1]
    abar = schedule.alphas_cumprod
    x = torch.randn(num, model.spec.in_channels, size, size, generator=g)
    for i, t in enumerate(ts):
        t_prev = int(ts[i + 1]) if i + 1 < len(ts) else -1
        a_t = abar[t]
        a_prev = abar[t_prev] if t_prev >= 0 else torch.tensor(1.0)
        beta = 1 - a_t / a_prev  # the respaced step's beta
        eps = model(x, torch.full((num,), int(t), dtype=torch.long))
        x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
        mean = (a_prev.sqrt() * beta / (1 - a_t)) * x0 + ((1 - beta).sqrt() * (1 - a_prev) / (1 - a_t)) * x
        if t_prev >= 0:
            var = beta * (1 - a_prev) / (1 - a_t)
            x = mean + var.sqrt() * torch.randn(x.shape, generator=g)
        else:
            x = mean
    return x.clamp(-1, 1)


def save_grid(images: torch.Tensor, path: Path, columns: int = 4) -> Path:
    """(N, C, s, s) in [-1, 1] -> one PNG grid."""
    arr = ((images.numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    n, c, s, _ = arr.shape
    rows = math.ceil(n / columns)
    grid = np.zeros((rows * (s + 2), columns * (s + 2), c), np.uint8)
    for i in range(n):
        r, col = divmod(i, columns)
        grid[r * (s + 2) + 1:r * (s + 2) + 1 + s, col * (s + 2) + 1:col * (s + 2) + 1 + s] = arr[i].transpose(1, 2, 0)
    if c == 3:
        grid = grid[:, :, ::-1]
    cv2.imwrite(str(path), grid)
    return path


@dataclass
class DDPMResult:
    weights: Path
    samples: Path
    final_loss: float
    seconds_per_epoch: float
    parameters: int


def train_ddpm(cfg: DDPMConfig, records: list[Record], canvas_size: int, out_dir: str | Path, seed: int = 0,
               config_hash: str = "", resume: bool | str = "auto", threads: int | None = None) -> DDPMResult:
    """Train on ``records``; write ``ddpm.safetensors`` (EMA weights), ``samples.png``, ``loss.csv``.

    An interrupted run resumes from ``state.pt`` (see :mod:`training.engine.resume` for ``resume``).
    """
    if not records:
        raise ValueError("ddpm: no training images")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    apply_thread_budget("ddpm", threads)
    state_path = out_dir / "state.pt"
    state = resume_state(state_path, config_hash, resume, out_dir)
    torch.manual_seed(seed)
    model = UNet(unet_spec(cfg))
    ema = ModelEMA(model, ratio_decay(cfg.ema_decay), include_buffers=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    schedule = NoiseSchedule(cfg.timesteps, cfg.schedule)
    data = load_ddpm_inputs(records, canvas_size, cfg)
    steps_per_epoch = max(1, math.ceil(len(data) / cfg.batch_size))
    lr = WarmupCosine(cfg.lr, cfg.epochs * steps_per_epoch, steps_per_epoch, floor=0.1, warmup="scale")
    loop = TrainLoop(model, optimizer, lr, clip_norm=1.0, ema=ema)
    start_epoch, losses = 0, []
    if state is not None:
        start_epoch, losses = loop.restore(state), list(json.loads(state["losses"]))
        log.info("ddpm: resuming from epoch %d", start_epoch)
    epoch_seconds = []
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(seed * 1000003 + epoch)
        order = torch.randperm(len(data), generator=g)

        def step(x0: torch.Tensor, g: torch.Generator = g) -> tuple[torch.Tensor, dict[str, float]]:
            if cfg.hflip:
                flip = torch.rand(len(x0), generator=g) < 0.5
                x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
            t = torch.randint(0, cfg.timesteps, (len(x0),), generator=g)
            noise = torch.randn(x0.shape, generator=g)
            loss = F.mse_loss(model(schedule.q_sample(x0, t, noise), t), noise)
            return loss, {"loss": float(loss.detach())}

        model.train()
        batches = (data[order[i * cfg.batch_size:(i + 1) * cfg.batch_size]] for i in range(steps_per_epoch))
        sums = loop.run_epoch(epoch, batches, steps_per_epoch, step, desc=f"ddpm {epoch + 1}/{cfg.epochs}")
        losses.append(sums["loss"] / steps_per_epoch)
        epoch_seconds.append(time.perf_counter() - t0)
        log.info("ddpm epoch %d: loss %.4f (%.1f s)", epoch + 1, losses[-1], epoch_seconds[-1])
        save_train_state(state_path, loop.state(epoch, config_hash, losses=json.dumps(losses)))
    ema_model = ema.module
    weights = out_dir / "ddpm.safetensors"
    meta = {"kind": "ddpm", "unet": ema_model.spec.to_dict(), "timesteps": cfg.timesteps, "schedule": cfg.schedule,
            "image_size": cfg.image_size, "canvas_size": canvas_size, "config": asdict(cfg)}
    save_weights(weights, ema_model.state_dict(), meta)
    with (out_dir / "loss.csv").open("w") as f:
        f.write("epoch,loss\n" + "".join(f"{i + 1},{v:.6f}\n" for i, v in enumerate(losses)))
    samples = save_grid(sample(ema_model, schedule, cfg.num_samples, cfg.image_size, cfg.sample_steps, seed),
                        out_dir / "samples.png")
    return DDPMResult(weights, samples, losses[-1] if losses else float("nan"),
                      sum(epoch_seconds) / max(1, len(epoch_seconds)), sum(p.numel() for p in ema_model.parameters()))


def load_ddpm(path: str | Path) -> tuple[UNet, NoiseSchedule, dict[str, Any]]:
    """The EMA UNet, its schedule and the metadata of a ``ddpm.safetensors``."""
    meta = read_kind_meta(path, "ddpm", "DDPM")
    model = load_strict(UNet(UNetSpec.from_dict(meta["unet"])), path, "UNet")
    return model, NoiseSchedule(meta["timesteps"], meta["schedule"]), meta

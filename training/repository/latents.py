"""Stage ``resvae``: train the ResVAE on the raw feature repository's training rows, then encode every image
into the latent repository (float16 means), and measure what the compression keeps.

Rows are read from the repositories in batches (positional reads), never the whole store at once.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.config import ResVAEConfig
from training.engine.checkpoint import load_strict, read_kind_meta, save_train_state, save_weights
from training.engine.loop import TrainLoop
from training.engine.resume import resume_state
from training.engine.schedule import WarmupCosine
from training.engine.threads import apply_thread_budget
from training.repository.resvae import ResVAE, ResVAESpec
from training.repository.store import FeatureRepository, RepositoryWriter, open_if_built

log = logging.getLogger(__name__)


def iter_rows(repo: FeatureRepository, name: str, rows: Sequence[int], batch: int) -> Iterator[np.ndarray]:
    for i in range(0, len(rows), batch):
        yield repo.read_rows(name, rows[i:i + batch])


def channel_statistics(repo: FeatureRepository, rows: Sequence[int], batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of array ``features`` over ``rows`` (streamed, float64 sums)."""
    c = repo.shape("features")[0]
    s1, s2, n = np.zeros(c), np.zeros(c), 0
    for chunk in iter_rows(repo, "features", rows, batch):
        x = chunk.astype(np.float64)
        s1 += x.sum(axis=(0, 2, 3))
        s2 += (x * x).sum(axis=(0, 2, 3))
        n += x.shape[0] * x.shape[2] * x.shape[3]
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
    return torch.from_numpy(mean).float(), torch.from_numpy(std).float()


def train_resvae(cfg: ResVAEConfig, raw: FeatureRepository, train_ids: Sequence[str], out_dir: Path,
                 seed: int = 0, config_hash: str = "", resume: bool | str = "auto",
                 threads: int | None = None) -> tuple[ResVAE, float]:
    """Train on the ``train_ids`` rows of ``raw``; write ``loss.csv``; return (model in eval mode, seconds per epoch).

    An interrupted run resumes from ``state.pt`` (see :mod:`training.engine.resume` for ``resume``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    apply_thread_budget("resvae", threads)
    state_path = out_dir / "state.pt"
    state = resume_state(state_path, config_hash, resume, out_dir)
    rows = raw.rows_of(train_ids)
    spec = ResVAESpec(in_channels=raw.shape("features")[0], latent_channels=cfg.latent_channels, hidden=cfg.hidden,
                      blocks=cfg.blocks, downsample=cfg.downsample)
    torch.manual_seed(seed)
    model = ResVAE(spec)
    model.set_statistics(*channel_statistics(raw, rows))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    steps = max(1, math.ceil(len(rows) / cfg.batch_size))
    schedule = WarmupCosine(cfg.lr, cfg.epochs * steps, steps, floor=0.05, warmup="scale")
    loop = TrainLoop(model, optimizer, schedule, clip_norm=5.0)
    g = torch.Generator().manual_seed(seed)
    start_epoch, log_rows = 0, []
    if state is not None:
        start_epoch = loop.restore(state)
        g.set_state(state["rng"])
        log_rows = [tuple(r) for r in json.loads(state["log_rows"])]
        log.info("resvae: resuming from epoch %d", start_epoch)

    def step(chunk: np.ndarray) -> tuple[torch.Tensor, dict[str, float]]:
        loss, parts = model.loss(torch.from_numpy(chunk), cfg.kl_weight, g)
        return loss, {"recon": parts["recon"] / steps, "kl": parts["kl"] / steps}

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        order = [rows[i] for i in torch.randperm(len(rows), generator=g).tolist()]
        model.train()
        sums = loop.run_epoch(epoch, iter_rows(raw, "features", order, cfg.batch_size), steps, step,
                              desc=f"resvae {epoch + 1}/{cfg.epochs}", sums={"recon": 0.0, "kl": 0.0}, show="recon")
        log_rows.append((epoch + 1, sums["recon"], sums["kl"], time.perf_counter() - t0))
        log.info("resvae epoch %d: recon %.4f (%.1f s)", epoch + 1, sums["recon"], log_rows[-1][3])
        save_train_state(state_path, loop.state(epoch, config_hash, rng=g.get_state(), log_rows=json.dumps(log_rows)))
    with (out_dir / "loss.csv").open("w") as f:
        f.write("epoch,recon,kl,seconds\n" + "".join(f"{e},{r:.6f},{k:.4f},{s:.2f}\n" for e, r, k, s in log_rows))
    return model.eval(), sum(r[3] for r in log_rows) / max(1, len(log_rows))


def save_resvae(model: ResVAE, path: Path, meta: dict[str, Any]) -> None:
    save_weights(path, model.state_dict(), {"kind": "resvae", "spec": model.spec.to_dict(), **meta})


def load_resvae(path: str | Path) -> ResVAE:
    meta = read_kind_meta(path, "resvae", "ResVAE")
    return load_strict(ResVAE(ResVAESpec(**meta["spec"])), path, "ResVAE")


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


@torch.no_grad()
def encode_repository(model: ResVAE, raw: FeatureRepository, out: Path, build_key: str, batch: int = 64,
                      chunk: int = 256) -> FeatureRepository:
    """Latent means of every image of ``raw`` as float16 array ``latents`` (atomic, resumable)."""
    existing = open_if_built(out, build_key)
    if existing is not None:
        return existing
    probe = model.encode(torch.from_numpy(raw.read_rows("features", [0])))[0]
    writer = RepositoryWriter(out, raw.ids, {"latents": (tuple(probe.shape[1:]), "float16")}, build_key,
                              meta={"kind": "latents", "raw": str(raw.root), **raw.meta})
    ids = list(range(len(raw.ids)))
    for start in writer.remaining[::chunk]:
        rows = ids[start:start + chunk]
        mus = [model.encode(torch.from_numpy(x))[0].numpy().astype(np.float16)
               for x in iter_rows(raw, "features", rows, batch)]
        writer.write_chunk(start, {"latents": np.concatenate(mus)})
    return writer.finish()


@torch.no_grad()
def reconstruction_quality(model: ResVAE, raw: FeatureRepository, latents: FeatureRepository,
                           ids: Sequence[str], batch: int = 64) -> tuple[float, float]:
    """Mean per-image cosine similarity of decoded vs raw features: (raw scale, standardised)."""
    cos_raw, cos_std = [], []
    for i in range(0, len(ids), batch):
        part = ids[i:i + batch]
        x = torch.from_numpy(raw.get("features", part)).float()
        decoded = model.decode(torch.from_numpy(latents.get("latents", part)))
        cos_std.append(_cosine(decoded, model.standardize(x)))
        cos_raw.append(_cosine(model.destandardize(decoded), x))
    return float(torch.cat(cos_raw).mean()), float(torch.cat(cos_std).mean())


def compression_ratio(raw: FeatureRepository, latents: FeatureRepository) -> float:
    """Raw features at float32 over latent bytes, per image."""
    raw_bytes = int(np.prod(raw.shape("features"))) * 4
    latent_bytes = int(np.prod(latents.shape("latents"))) * latents.dtype("latents").itemsize
    return raw_bytes / latent_bytes

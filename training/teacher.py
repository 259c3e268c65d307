"""Stage ``teacher``: the detector plus fusion of the image's DDPM features, trained on ground truth.

Per batch: the images' rows are looked up by image id in the latent repository (or the raw feature repository
when ``resvae.enabled`` is false), decoded by the frozen ResVAE into standardised stride-8 feature maps, moved
by the same geometric augmentation as the image (:func:`warp_features`), and fused into the detector's pyramid
levels by :class:`~training.models.fusion.Fusion`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training.checkpoint import load_detector, load_strict, read_kind_meta
from training.config import ExperimentConfig
from training.data.records import Dataset
from training.eval.torch_predict import ForwardFn
from training.latents import load_resvae
from training.models import DefectDetector, DetectorOutput, DetectorSpec
from training.models.fusion import Fusion
from training.repository import FeatureRepository
from training.train import Trainer

log = logging.getLogger(__name__)

# config sections a resumed teacher run must share (train is compared separately, without its epochs)
TEACHER_RESUME_SECTIONS = ("data", "model", "ddpm", "features", "resvae", "teacher")


class FeatureSource:
    """Image ids -> standardised DDPM feature maps (B, C, g, g): latents through the frozen ResVAE decoder, or
    raw features standardised with the training statistics."""

    def __init__(self, repo: FeatureRepository, resvae_weights: str | Path) -> None:
        self.repo = repo
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
        rows = torch.from_numpy(self.repo.get(self.array, image_ids)).float()
        feats = self.resvae.decode(rows) if self.array == "latents" else self.resvae.standardize(rows)
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


class TeacherDetector(nn.Module):
    """A :class:`DefectDetector` whose neck levels are rewritten by :class:`Fusion` before the heads."""

    def __init__(self, spec: DetectorSpec, ddpm_channels: int, grid: int, fusion: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        self.detector = DefectDetector(spec)
        self.fusion = Fusion(ddpm_channels, grid, self.detector.feature_channels, **fusion)

    def forward(self, x: torch.Tensor, ddpm: torch.Tensor) -> DetectorOutput:
        return self.detector(x, fuse=lambda feats: self.fusion(feats, ddpm))

    def decode(self, out: DetectorOutput, input_size: int) -> torch.Tensor:
        return self.detector.decode(out, input_size)


def fusion_options(config: ExperimentConfig) -> dict[str, Any]:
    t = config.teacher
    return {"levels": list(t.levels), "heads": t.heads, "fft_filter": t.fft_filter,
            "learnable_filter": t.learnable_filter, "filter_sigma": t.filter_sigma, "gate": t.gate, "impl": t.impl}


class FeatureLookupMixin:
    """Shared by the teacher and distillation trainers: each item's augmentation matrix, and the feature lookup."""

    source: FeatureSource
    train_set: Dataset
    val_set: Dataset
    input_size: int

    def dataset_options(self) -> dict[str, Any]:
        return {"with_affine": True}

    def batch_features(self, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        ids = [self.train_set.records[int(i)].image_id for i in batch["index"]]
        feats = self.source(ids, device)
        return warp_features(feats, batch["affine"], self.input_size) if "affine" in batch else feats


def with_features(source: FeatureSource) -> ForwardFn:
    """``predict_records(forward=...)`` for a teacher: each batch's DDPM features looked up by image id."""
    return lambda model, x, records: model(x, source([r.image_id for r in records], x.device))


class TeacherTrainer(FeatureLookupMixin, Trainer):
    resume_sections = TEACHER_RESUME_SECTIONS

    def __init__(self, config: ExperimentConfig, train_set: Dataset, val_set: Dataset, run_dir: str | Path,
                 source: FeatureSource, resume: bool | str = "auto", dataset_info: dict[str, Any] | None = None,
                 init_weights: str | Path | None = None) -> None:
        super().__init__(config, train_set, val_set, run_dir, resume, dataset_info)
        self.source = source
        self.init_weights = Path(init_weights) if init_weights else None

    @property
    def epochs(self) -> int:
        return self.config.teacher.epochs or self.config.train.epochs

    @property
    def base_lr(self) -> float:
        return self.config.teacher.lr or self.config.train.lr

    def build_model(self) -> TeacherDetector:
        torch.manual_seed(self.config.seed)
        model = TeacherDetector(self.spec, self.source.channels, self.source.grid, fusion_options(self.config))
        if self.init_weights is not None:  # the fusion starts as the identity, so this starts at the baseline
            detector, _ = load_detector(self.init_weights)
            if detector.spec != self.spec:
                raise ValueError(f"{self.init_weights}: detector {detector.spec} differs from the teacher's {self.spec}")
            model.detector.load_state_dict(detector.state_dict())
        return model

    def forward(self, model: nn.Module, images: torch.Tensor, batch: dict[str, torch.Tensor]) -> DetectorOutput:
        return model(images, self.batch_features(batch, images.device))

    def eval_forward(self) -> ForwardFn:
        return with_features(self.source)

    def _meta(self, **extra: Any) -> dict[str, Any]:
        return super()._meta(kind="teacher", ddpm_channels=self.source.channels, grid=self.source.grid,
                             fusion=fusion_options(self.config), **extra)


def load_teacher(path: str | Path, impl: str | None = None) -> tuple[TeacherDetector, dict[str, Any]]:
    """Rebuild a teacher from its checkpoint (optionally switching its ops to ``impl``)."""
    meta = read_kind_meta(path, "teacher", "teacher")
    fusion = dict(meta["fusion"])
    if impl is not None:
        fusion["impl"] = impl
    model = TeacherDetector(DetectorSpec(**meta["spec"]), meta["ddpm_channels"], meta["grid"], fusion)
    return load_strict(model, path, "teacher"), meta

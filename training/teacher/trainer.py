"""Stage ``teacher``: the detector plus fusion of the image's DDPM features, trained on ground truth.

Per batch the images' DDPM features come from :class:`~training.teacher.feature_source.FeatureSource` and are
fused into the detector's pyramid levels by :class:`~training.teacher.fusion.Fusion`; by default the detector
starts from the baseline's weights and the whole teacher is fine-tuned.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.config import ExperimentConfig
from training.data.records import Dataset
from training.detector import DetectorOutput
from training.detector.checkpoint import load_detector_with_spec
from training.detector.trainer import TeacherSchedule, Trainer
from training.evaluation.torch_predict import ForwardFn
from training.teacher.feature_source import FeatureLookupMixin, FeatureSource, with_features
from training.teacher.model import TeacherDetector, fusion_options

log = logging.getLogger(__name__)

# config sections a resumed teacher run must share (train is compared separately, without its epochs)
TEACHER_RESUME_SECTIONS = ("data", "model", "ddpm", "features", "resvae", "teacher")


class TeacherTrainer(FeatureLookupMixin, TeacherSchedule, Trainer):
    resume_sections = TEACHER_RESUME_SECTIONS

    def __init__(self, config: ExperimentConfig, train_set: Dataset, val_set: Dataset, run_dir: str | Path,
                 source: FeatureSource, resume: bool | str = "auto", dataset_info: dict[str, Any] | None = None,
                 init_weights: str | Path | None = None) -> None:
        super().__init__(config, train_set, val_set, run_dir, resume, dataset_info)
        self.source = source
        self.init_weights = Path(init_weights) if init_weights else None

    @property
    def warmup_bias_lr(self) -> float | None:
        return None if self.init_weights is not None else super().warmup_bias_lr

    def build_model(self) -> TeacherDetector:
        torch.manual_seed(self.config.detector_seed)
        model = TeacherDetector(self.spec, self.source.channels, self.source.grid, fusion_options(self.config))
        if self.init_weights is not None:  # the fusion starts as the identity, so this starts at the baseline
            model.detector.load_state_dict(load_detector_with_spec(self.init_weights, self.spec).state_dict())
        return model

    def forward(self, model: nn.Module, images: torch.Tensor, batch: dict[str, torch.Tensor]) -> DetectorOutput:
        return model(images, self.batch_features(batch, images.device))

    def eval_forward(self) -> ForwardFn:
        return with_features(self.source)

    def _meta(self, **extra: Any) -> dict[str, Any]:
        return super()._meta(kind="teacher", ddpm_channels=self.source.channels, grid=self.source.grid,
                             fusion=fusion_options(self.config), **extra)



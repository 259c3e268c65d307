"""Stage ``distill``: the student (the baseline architecture) trained from the frozen teacher.

Loss = detection loss on ground truth
     + ``feature_weight``  * normalised feature distillation on the neck levels (each map standardised over
       (C, H, W) per image; squared error averaged over channels, cells inside ground-truth boxes weighted
       ``foreground_weight`` against 1 for background, normalised by the total weight)
     + ``response_weight`` * response distillation: classification (binary cross-entropy of the student's
       tempered sigmoid against the teacher's) and box distribution (KL divergence of the tempered per-side bin
       distributions, weighted per anchor by the teacher's top class score), both scaled by T^2.

The teacher runs in eval mode without autograd, through the C++/CUDA kernels. Only the student is saved, so
the export stage packages it exactly like the baseline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from training.config import ExperimentConfig
from training.data.records import Dataset
from training.detector import DetectorOutput
from training.detector.checkpoint import load_detector
from training.detector.model import STRIDES
from training.detector.trainer import Trainer
from training.distill.losses import feature_distillation, foreground_weights, response_distillation
from training.teacher.feature_source import FeatureLookupMixin, FeatureSource
from training.teacher.model import load_teacher
from training.teacher.trainer import TEACHER_RESUME_SECTIONS


class DistillTrainer(FeatureLookupMixin, Trainer):
    resume_sections = TEACHER_RESUME_SECTIONS + ("distill",)

    def __init__(self, config: ExperimentConfig, train_set: Dataset, val_set: Dataset, run_dir: str | Path,
                 teacher_weights: str | Path, source: FeatureSource | None, resume: bool | str = "auto",
                 dataset_info: dict[str, Any] | None = None) -> None:
        super().__init__(config, train_set, val_set, run_dir, resume, dataset_info)
        self.source = source
        # distill.teacher "baseline" / "continued" are the controls: the same distillation from a plain detector
        # with no DDPM features isolates what the features add ("continued" also matches the teacher's epochs)
        self.plain_teacher = config.distill.teacher != "ddpm"
        if self.plain_teacher:
            self.teacher, _ = load_detector(teacher_weights)
        elif source is None:
            raise ValueError("a DDPM teacher needs its feature source")
        else:
            self.teacher, _ = load_teacher(teacher_weights, impl="kernel")
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.to(self.dist.device)
        if self.teacher.spec != self.spec:
            raise ValueError(f"{teacher_weights}: the teacher's detector {self.teacher.spec} differs from the "
                             f"student's {self.spec}; distillation matches their neck levels one to one")
        self.cfg = config.distill

    @property
    def epochs(self) -> int:
        return self.config.distill.epochs or self.config.train.epochs

    def compute_loss(self, out: DetectorOutput, images: torch.Tensor, batch: dict[str, torch.Tensor]
                     ) -> tuple[torch.Tensor, dict[str, float]]:
        loss, parts = self.loss_fn(out, batch)
        if self.cfg.feature_weight == 0 and self.cfg.response_weight == 0:
            return loss, parts
        with torch.no_grad():
            t_out = (self.teacher(images) if self.plain_teacher
                     else self.teacher(images, self.batch_features(batch, images.device)))
        n = images.shape[0]  # the detection loss is summed over the batch; keep the KD terms on the same scale
        if self.cfg.feature_weight > 0:
            weights = [foreground_weights(batch["boxes"], batch["valid"], self.input_size, s,
                                          self.cfg.foreground_weight) for s in STRIDES]
            kd_feat = feature_distillation(out.features, t_out.features, weights)
            loss = loss + self.cfg.feature_weight * kd_feat * n
            parts["kd_feat"] = float(kd_feat)
        if self.cfg.response_weight > 0:
            kd_cls, kd_box = response_distillation(out, t_out, self.spec.reg_max, self.cfg.temperature)
            loss = loss + self.cfg.response_weight * (kd_cls + kd_box) * n
            parts["kd_resp"] = float(kd_cls + kd_box)
        return loss, parts

    def _meta(self, **extra: Any) -> dict[str, Any]:
        return super()._meta(distilled_from=self.config.distill.teacher if self.plain_teacher else "teacher", **extra)

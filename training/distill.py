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
import torch.nn.functional as F

from training.config import ExperimentConfig
from training.data.records import Dataset
from training.models import DetectorOutput
from training.models.detector import STRIDES
from training.teacher import TEACHER_RESUME_SECTIONS, FeatureLookupMixin, FeatureSource, load_teacher
from training.train import Trainer


def _standardize(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True)
    return (x - mean) / (std + 1e-6)


def foreground_weights(boxes: torch.Tensor, valid: torch.Tensor, size: int, stride: int, fg: float) -> torch.Tensor:
    """(B, 1, size/stride, size/stride): ``fg`` for cells whose centre lies in a ground-truth box, else 1."""
    n = size // stride
    centres = (torch.arange(n, device=boxes.device, dtype=torch.float32) + 0.5) * stride
    cy, cx = centres.view(1, 1, n, 1), centres.view(1, 1, 1, n)
    b = boxes[:, :, :, None, None]
    inside = (cx >= b[:, :, 0]) & (cx <= b[:, :, 2]) & (cy >= b[:, :, 1]) & (cy <= b[:, :, 3])
    inside = (inside & valid[:, :, None, None]).any(dim=1, keepdim=True)
    return 1.0 + (fg - 1.0) * inside.float()


def feature_distillation(student: list[torch.Tensor], teacher: list[torch.Tensor], weights: list[torch.Tensor]
                         ) -> torch.Tensor:
    total = student[0].new_zeros(())
    for s, t, w in zip(student, teacher, weights):
        err = (_standardize(s) - _standardize(t)).pow(2).mean(dim=1, keepdim=True)
        total = total + (err * w).sum() / w.sum()
    return total / len(student)


def response_distillation(student: DetectorOutput, teacher: DetectorOutput, reg_max: int, temperature: float
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(classification term, box term), each already scaled by T^2."""
    t2 = temperature ** 2
    t_prob = torch.sigmoid(teacher.cls_logits / temperature)
    cls = F.binary_cross_entropy_with_logits(student.cls_logits / temperature, t_prob, reduction="none")
    cls = cls.sum(-1).mean() * t2
    weight = torch.sigmoid(teacher.cls_logits).max(-1).values  # (B, A): anchors the teacher sees objects at
    b, a, _ = student.box_dist.shape
    if reg_max > 1:
        s_log = F.log_softmax(student.box_dist.view(b, a, 4, reg_max) / temperature, -1)
        t_log = F.log_softmax(teacher.box_dist.view(b, a, 4, reg_max) / temperature, -1)
        per_anchor = (t_log.exp() * (t_log - s_log)).sum(-1).mean(-1)
    else:
        per_anchor = (student.box_dist - teacher.box_dist).pow(2).mean(-1)
    box = (per_anchor * weight).sum() / weight.sum().clamp_min(1e-6) * t2
    return cls, box


class DistillTrainer(FeatureLookupMixin, Trainer):
    resume_sections = TEACHER_RESUME_SECTIONS + ("distill",)

    def __init__(self, config: ExperimentConfig, train_set: Dataset, val_set: Dataset, run_dir: str | Path,
                 teacher_weights: str | Path, source: FeatureSource, resume: bool | str = "auto",
                 dataset_info: dict[str, Any] | None = None) -> None:
        super().__init__(config, train_set, val_set, run_dir, resume, dataset_info)
        self.source = source
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
            t_out = self.teacher(images, self.batch_features(batch, images.device))
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
        return super()._meta(distilled_from="teacher", **extra)

"""The distillation losses: normalised feature distillation and response distillation (see the trainer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.detector import DetectorOutput


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

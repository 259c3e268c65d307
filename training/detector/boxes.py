"""Box ops in torch (xyxy): pairwise IoU and the GIoU/CIoU used by the box loss. No torchvision."""

from __future__ import annotations

import math

import torch


def _inter_union(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter, area_a + area_b - inter


def pairwise_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """IoU of broadcastable xyxy boxes ``a[..., 4]`` and ``b[..., 4]``."""
    inter, union = _inter_union(a, b)
    return inter / (union + eps)


def aligned_iou(pred: torch.Tensor, target: torch.Tensor, kind: str = "ciou", eps: float = 1e-7) -> torch.Tensor:
    """IoU, GIoU or CIoU of matched xyxy boxes (..., 4) -> (...)."""
    inter, union = _inter_union(pred, target)
    iou = inter / (union + eps)
    if kind == "iou":
        return iou
    enc_lt = torch.minimum(pred[..., :2], target[..., :2])
    enc_rb = torch.maximum(pred[..., 2:], target[..., 2:])
    enc_wh = (enc_rb - enc_lt).clamp(min=0)
    if kind == "giou":
        enc_area = enc_wh.prod(-1) + eps
        return iou - (enc_area - union) / enc_area
    if kind == "ciou":
        diag2 = enc_wh.pow(2).sum(-1) + eps
        centre2 = ((pred[..., :2] + pred[..., 2:]) - (target[..., :2] + target[..., 2:])).pow(2).sum(-1) / 4
        wp, hp = (pred[..., 2] - pred[..., 0]).clamp(min=eps), (pred[..., 3] - pred[..., 1]).clamp(min=eps)
        wt, ht = (target[..., 2] - target[..., 0]).clamp(min=eps), (target[..., 3] - target[..., 1]).clamp(min=eps)
        v = (4 / math.pi**2) * (torch.atan(wt / ht) - torch.atan(wp / hp)).pow(2)
        with torch.no_grad():
            alpha = v / (v - iou + (1 + eps))
        return iou - (centre2 / diag2 + v * alpha)
    raise ValueError(f"box loss kind must be 'iou', 'giou' or 'ciou', got {kind!r}")

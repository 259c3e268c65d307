"""Task-aligned label assignment (TOOD): anchors whose centre lies in a box and whose predicted score and
IoU for that box are jointly high become its positives; soft targets scale with the alignment."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from training.detector.boxes import pairwise_iou


@dataclass
class Assignment:
    fg_mask: torch.Tensor  # (B, A) bool: anchor assigned to some box
    target_boxes: torch.Tensor  # (B, A, 4) canvas px (meaningful where fg)
    target_scores: torch.Tensor  # (B, A, C) soft classification targets (zero for background)
    target_gt_index: torch.Tensor  # (B, A) index of the assigned box


class TaskAlignedAssigner:
    def __init__(self, topk: int = 10, alpha: float = 1.0, beta: float = 6.0, eps: float = 1e-9,
                 nearest: int = 3) -> None:
        self.topk, self.alpha, self.beta, self.eps, self.nearest = topk, alpha, beta, eps, nearest

    @torch.no_grad()
    def __call__(self, pred_scores: torch.Tensor, pred_boxes: torch.Tensor, anchors: torch.Tensor,
                 gt_labels: torch.Tensor, gt_boxes: torch.Tensor, gt_valid: torch.Tensor) -> Assignment:
        """pred_scores (B, A, C) probabilities, pred_boxes (B, A, 4), anchors (A, 2), gt_labels (B, G) int,
        gt_boxes (B, G, 4), gt_valid (B, G) bool (padding is False)."""
        b, a, c = pred_scores.shape
        g = gt_boxes.shape[1]
        device = pred_scores.device
        if g == 0:
            return Assignment(torch.zeros(b, a, dtype=torch.bool, device=device), torch.zeros(b, a, 4, device=device),
                              torch.zeros(b, a, c, device=device), torch.zeros(b, a, dtype=torch.long, device=device))
        # anchors inside each box: (B, G, A)
        lt = anchors[None, None] - gt_boxes[:, :, None, :2]
        rb = gt_boxes[:, :, None, 2:] - anchors[None, None]
        inside = torch.cat([lt, rb], -1).amin(-1) > self.eps
        # a box thinner than the finest stride can hold no anchor centre (thin scratches): its nearest anchors
        # become its candidates instead, so no ground-truth box goes unlearned
        orphan = ~inside.any(-1) & gt_valid
        if orphan.any():
            centres = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2
            dist = (anchors[None, None] - centres[:, :, None]).pow(2).sum(-1)  # (B, G, A)
            near = dist.topk(min(self.nearest, a), dim=-1, largest=False).indices
            fallback = torch.zeros_like(inside).scatter_(-1, near, True)
            inside = torch.where(orphan[..., None], fallback, inside)
        candidate = inside & gt_valid[:, :, None]
        ious = pairwise_iou(gt_boxes[:, :, None, :], pred_boxes[:, None, :, :]).clamp(min=0) * candidate
        labels = gt_labels.clamp(min=0).long()
        scores = pred_scores.gather(2, labels[:, None, :].expand(b, a, g)).transpose(1, 2)  # (B, G, A)
        align = scores.pow(self.alpha) * ious.pow(self.beta) * candidate
        k = min(self.topk, a)
        top_idx = align.topk(k, dim=-1).indices
        in_topk = torch.zeros_like(candidate).scatter_(-1, top_idx, True)
        pos = in_topk & candidate  # (B, G, A)
        # an anchor claimed by several boxes keeps the one it overlaps most
        multi = pos.sum(1, keepdim=True) > 1
        if multi.any():
            best = ious.argmax(1, keepdim=True)
            best_onehot = torch.zeros_like(pos).scatter_(1, best, True)
            pos = torch.where(multi, best_onehot & candidate, pos)
        fg = pos.any(1)
        gt_index = pos.float().argmax(1)  # (B, A)
        target_boxes = gt_boxes.gather(1, gt_index[..., None].expand(b, a, 4))
        target_labels = labels.gather(1, gt_index)
        target_scores = torch.zeros(b, a, c, device=device)
        target_scores.scatter_(2, target_labels[..., None], 1.0)
        target_scores *= fg[..., None]
        # soft targets: alignment normalised per box so its best anchor gets that box's best IoU
        align = align * pos
        norm = (align * ious.amax(-1, keepdim=True) / (align.amax(-1, keepdim=True) + self.eps)).amax(1)
        target_scores *= norm[..., None]
        return Assignment(fg, target_boxes, target_scores, gt_index)

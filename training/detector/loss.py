"""Detection loss: classification (BCE or varifocal) on task-aligned soft targets, box loss (GIoU/CIoU)
weighted by target quality, distribution focal loss on the box bins, and the optional segmentation loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.config import AssignerConfig, LossWeights
from training.detector.assigner import TaskAlignedAssigner
from training.detector.boxes import aligned_iou
from training.detector.model import DetectorOutput, dist_to_ltrb, ltrb_to_xyxy, make_anchors

SEG_IGNORE = 255


class DetectionLoss:
    def __init__(self, num_classes: int, reg_max: int, input_size: int, cls_loss: str = "varifocal",
                 box_loss: str = "ciou", weights: LossWeights | None = None,
                 assigner: AssignerConfig | None = None) -> None:
        if cls_loss not in ("bce", "varifocal"):
            raise ValueError(f"cls_loss must be 'bce' or 'varifocal', got {cls_loss!r}")
        if box_loss not in ("iou", "giou", "ciou"):
            raise ValueError(f"box_loss must be 'iou', 'giou' or 'ciou', got {box_loss!r}")
        self.num_classes, self.reg_max, self.input_size = num_classes, reg_max, input_size
        self.cls_loss, self.box_loss = cls_loss, box_loss
        self.weights = weights or LossWeights()
        tal = assigner or AssignerConfig()
        self.assigner = TaskAlignedAssigner(topk=tal.topk, alpha=tal.alpha, beta=tal.beta)
        self._anchor_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _anchors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._anchor_cache:
            self._anchor_cache[device] = make_anchors(self.input_size, device=device)
        return self._anchor_cache[device]

    def __call__(self, out: DetectorOutput, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss (scaled by batch size, as summed-per-image losses are) and its parts for logging."""
        anchors, strides = self._anchors(out.cls_logits.device)
        cls_logits, box_dist = out.cls_logits.float(), out.box_dist.float()
        bsz = cls_logits.shape[0]
        ltrb = dist_to_ltrb(box_dist, self.reg_max)
        pred_boxes = ltrb_to_xyxy(ltrb, anchors, strides)
        asg = self.assigner(cls_logits.detach().sigmoid(), pred_boxes.detach(), anchors,
                            batch["labels"], batch["boxes"], batch["valid"])
        score_sum = asg.target_scores.sum().clamp(min=1.0)

        if self.cls_loss == "varifocal":
            p = cls_logits.sigmoid()
            weight = 0.75 * p.detach().pow(2) * (asg.target_scores <= 0) + asg.target_scores
            bce = F.binary_cross_entropy_with_logits(cls_logits, asg.target_scores, reduction="none")
            loss_cls = (bce * weight).sum() / score_sum
        else:
            loss_cls = F.binary_cross_entropy_with_logits(cls_logits, asg.target_scores, reduction="sum") / score_sum

        fg = asg.fg_mask
        zero = cls_logits.sum() * 0
        loss_box, loss_dfl = zero, zero
        if fg.any():
            weight = asg.target_scores.sum(-1)[fg]
            iou = aligned_iou(pred_boxes[fg], asg.target_boxes[fg], self.box_loss)
            loss_box = ((1.0 - iou) * weight).sum() / score_sum
            if self.reg_max > 1:
                a_xy = anchors[None].expand_as(pred_boxes[..., :2])[fg]
                s = strides[None].expand(bsz, -1, -1)[fg]
                tgt = asg.target_boxes[fg]
                target_ltrb = torch.cat([a_xy - tgt[:, :2], tgt[:, 2:] - a_xy], -1) / s
                target_ltrb = target_ltrb.clamp(0, self.reg_max - 1 - 0.01)
                logits = box_dist[fg].view(-1, self.reg_max)
                left = target_ltrb.floor().long().view(-1)
                w_right = target_ltrb.view(-1) - left
                dfl = (F.cross_entropy(logits, left, reduction="none") * (1 - w_right)
                       + F.cross_entropy(logits, left + 1, reduction="none") * w_right).view(-1, 4).mean(-1)
                loss_dfl = (dfl * weight).sum() / score_sum

        loss_seg = zero
        if out.seg_logits is not None and "masks" in batch:
            seg_t = batch["masks"]
            h, w = out.seg_logits.shape[-2:]
            seg_t = F.interpolate(seg_t[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
            if (seg_t != SEG_IGNORE).any():
                loss_seg = F.cross_entropy(out.seg_logits.float(), seg_t, ignore_index=SEG_IGNORE)

        wts = self.weights
        total = (wts.box * loss_box + wts.cls * loss_cls + wts.dfl * loss_dfl + wts.seg * loss_seg) * bsz
        parts = {k: float(v.detach()) for k, v in (("box", loss_box), ("cls", loss_cls), ("dfl", loss_dfl), ("seg", loss_seg))}
        return total, parts

"""Decoding of the exported model's output and non-maximum suppression.

Every exported model returns ``detections`` of shape (N, A, 4 + C): for each of the A anchor points of the
stride-8/16/32 grids, a box xyxy in canvas pixels and C per-class probabilities (already sigmoid). Optional
``segmentation`` logits (N, C + 1, S/8, S/8) have class 0 = background.

Public API (docs/sdk.md): :func:`decode_detections`, and the box tools :func:`box_iou`, :func:`nms` and
:func:`batched_nms` for users merging detections of their own (tiles, several cameras).
"""

from __future__ import annotations

import numpy as np

from diffdefect_edge import _kernels

__all__ = ["batched_nms", "box_iou", "decode_detections", "nms"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU matrix of xyxy boxes."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS; indices of the kept boxes, highest score first (equal scores in input order). A box is
    dropped when its IoU with a kept box is above ``iou_threshold``."""
    return batched_nms(boxes, scores, np.zeros(len(boxes), np.int64), iou_threshold)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Class-aware NMS: as :func:`nms`, but boxes of different classes never suppress each other.

    Runs in the compiled extension (csrc/nms.cpp): at mAP thresholds (conf 0.001, thousands of candidates) a
    numpy loop costs many times the inference (docs/perf/).
    """
    boxes = np.ascontiguousarray(boxes, np.float32)
    scores = np.ascontiguousarray(scores, np.float32)
    class_ids = np.ascontiguousarray(class_ids, np.int64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {boxes.shape}")
    if scores.shape != (len(boxes),) or class_ids.shape != (len(boxes),):
        raise ValueError(f"scores {scores.shape} and class_ids {class_ids.shape} must have shape ({len(boxes)},)")
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    return _kernels.nms(boxes, scores, class_ids, float(iou_threshold))


def decode_detections(raw: np.ndarray, conf: float, iou: float, max_candidates: int = 3000,
                      max_det: int = 300, multi_label: bool = False, agnostic: bool = False
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's raw output (A, 4 + C) -> (boxes xyxy canvas px, scores, class ids) after NMS.

    By default each anchor yields at most one box, of its best class (one box per defect, as a line wants);
    ``multi_label`` yields one per class whose probability exceeds ``conf`` (what mAP evaluation uses);
    ``agnostic`` lets boxes of different classes suppress each other. Beyond ``max_candidates`` only the
    highest-scoring (anchor, class) pairs go to NMS; at most ``max_det`` are kept.
    One call into the compiled extension (csrc/nms.cpp), so that the postprocessing of the usual frame on a
    line (no defect) stays far below the inference (docs/benchmarks.md).
    """
    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.shape[1] < 5:
        raise ValueError(f"model output must be (A, 4 + C) per image, got shape {raw.shape}")
    if len(raw) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    return _kernels.decode_detections(np.ascontiguousarray(raw, np.float32), float(conf), float(iou),
                                      int(max_candidates), int(max_det), bool(multi_label), bool(agnostic))

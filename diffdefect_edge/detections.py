"""``Detections``: the one result type of the SDK (boxes in frame pixels, scores, classes, optional masks)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

_PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
            (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0)]


def color_for(class_id: int) -> tuple[int, int, int]:
    return _PALETTE[int(class_id) % len(_PALETTE)]


@dataclass
class Detections:
    """Detections of one frame. Empty detections are a normal value (``len(d) == 0``), never None.

    ``xyxy`` (N, 4) float32 frame pixels; ``scores`` (N,) float32; ``class_ids`` (N,) int64; ``names`` the
    model's class names (class id k is ``names[k]``); ``masks`` optional (N, H, W) bool in frame pixels.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    names: tuple[str, ...] = ()
    masks: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. latency, frame size

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        self.names = tuple(self.names)
        n = len(self.xyxy)
        if len(self.scores) != n or len(self.class_ids) != n:
            raise ValueError(f"xyxy, scores and class_ids must have the same length, got {n}, "
                             f"{len(self.scores)}, {len(self.class_ids)}")
        if self.masks is not None and len(self.masks) != n:
            raise ValueError(f"masks must have one entry per detection, got {len(self.masks)} for {n}")

    @classmethod
    def empty(cls, names: tuple[str, ...] | list[str] = (), meta: dict[str, Any] | None = None) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), tuple(names),
                   meta=meta or {})

    @classmethod
    def _from_checked(cls, xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, names: tuple[str, ...],
                      masks: np.ndarray | None, meta: dict[str, Any]) -> Detections:
        """Build from arrays that already have the right dtypes and shapes (the Detector's own), skipping the
        conversions and checks of ``__init__``, which are a visible share of a frame's postprocessing."""
        out = cls.__new__(cls)
        out.xyxy, out.scores, out.class_ids, out.names, out.masks, out.meta = xyxy, scores, class_ids, names, masks, meta
        return out

    def __len__(self) -> int:
        return len(self.xyxy)

    def __iter__(self) -> Iterator[tuple[np.ndarray, float, int, str]]:
        for box, score, cid, name in zip(self.xyxy, self.scores, self.class_ids, self.class_names):
            yield box, float(score), int(cid), name

    def __getitem__(self, index: Any) -> Detections:
        """Filter by a boolean mask, an index array/list or a slice (always returns Detections)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        idx = np.asarray(index) if not isinstance(index, slice) else index
        if isinstance(idx, np.ndarray) and idx.dtype == bool and len(idx) != len(self):
            raise IndexError(f"boolean filter has length {len(idx)}, detections have {len(self)}")
        return Detections(self.xyxy[idx], self.scores[idx], self.class_ids[idx], self.names,
                          None if self.masks is None else self.masks[idx], dict(self.meta))

    @property
    def class_names(self) -> list[str]:
        """Per-detection class name."""
        return [self.names[c] if 0 <= c < len(self.names) else str(c) for c in self.class_ids.tolist()]

    @property
    def area(self) -> np.ndarray:
        return (self.xyxy[:, 2] - self.xyxy[:, 0]) * (self.xyxy[:, 3] - self.xyxy[:, 1])

    def by_class(self) -> dict[str, Detections]:
        """Detections grouped by class name (only classes that occur)."""
        return {self.names[c] if c < len(self.names) else str(c): self[self.class_ids == c]
                for c in sorted(set(self.class_ids.tolist()))}

    def to_dict(self) -> dict[str, Any]:
        return {"detections": [{"box": [round(float(v), 2) for v in box], "score": round(score, 5),
                                "class_id": cid, "class_name": name} for box, score, cid, name in self],
                **({"meta": self.meta} if self.meta else {})}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def draw(self, frame: np.ndarray, labels: bool = True, thickness: int = 2, copy: bool = True) -> np.ndarray:
        """Boxes (and masks) with 'name score' labels on a BGR frame; returns the drawn frame."""
        canvas = frame.copy() if copy else frame
        if canvas.ndim == 2:
            canvas = cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR)
        if self.masks is not None and len(self):
            overlay = canvas.copy()
            for mask, cid in zip(self.masks, self.class_ids):
                overlay[mask] = color_for(cid)
            cv2.addWeighted(overlay, 0.35, canvas, 0.65, 0, dst=canvas)
        for box, score, cid, name in self:
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            color = color_for(cid)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
            if labels:
                text = f"{name} {score:.2f}"
                (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
                ty = y1 - 4 if y1 - th - base - 4 >= 0 else y1 + th + 4
                cv2.rectangle(canvas, (x1, ty - th - 2), (x1 + tw + 2, ty + base - 2), color, -1)
                cv2.putText(canvas, text, (x1 + 1, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                            cv2.LINE_AA)
        return canvas

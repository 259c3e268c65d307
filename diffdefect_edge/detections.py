"""``Detections``: the one result type of the SDK (boxes in frame pixels, scores, classes, optional masks)."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from diffdefect_edge.masks import BoxMasks, box_region

_PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
            (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0)]


def color_for(class_id: int) -> tuple[int, int, int]:
    return _PALETTE[int(class_id) % len(_PALETTE)]


def _strict_json(value: Any) -> Any:
    """JSON-able ``value`` with NaN / infinities as None (strict JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    if isinstance(value, np.generic):
        return _strict_json(value.item())
    return value


@dataclass(frozen=True)
class Verdict:
    """A part's decision: ``OK``, ``NG`` (a defect at or above its class's threshold) or ``NOT_INSPECTED``
    (the frame failed the camera-health check), with the reasons."""

    status: str
    reasons: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "OK"

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reasons": list(self.reasons)}


@dataclass
class Detections:
    """Detections of one frame. Empty detections are a normal value (``len(d) == 0``), never None.

    ``xyxy`` (N, 4) float32 frame pixels; ``scores`` (N,) float32; ``class_ids`` (N,) int64; ``names`` the
    model's class names (class id k is ``names[k]``); ``masks`` optional full-frame (N, H, W) bool masks given
    by the caller; ``box_masks`` the detector's per-box masks (small, pasted on demand by :meth:`mask`);
    ``meta`` e.g. latency and frame size; ``speed`` milliseconds per step (preprocess, inference, postprocess).
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    names: tuple[str, ...] = ()
    masks: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    box_masks: BoxMasks | None = None
    speed: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)  # per-class NG thresholds (calibration)

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        self.names = tuple(self.names)
        n = len(self.xyxy)
        if len(self.scores) != n or len(self.class_ids) != n:
            raise ValueError(f"xyxy, scores and class_ids must have the same length, got {n}, "
                             f"{len(self.scores)}, {len(self.class_ids)}")
        if self.masks is not None:
            self.masks = np.asarray(self.masks, dtype=bool)
            if self.masks.ndim != 3 or len(self.masks) != n:
                raise ValueError(f"masks must be (N, H, W) with one entry per detection, got shape "
                                 f"{self.masks.shape} for {n}")
        if self.box_masks is not None and len(self.box_masks) != n:
            raise ValueError(f"box_masks must have one entry per detection, got {len(self.box_masks)} for {n}")

    @classmethod
    def empty(cls, names: tuple[str, ...] | list[str] = (), meta: dict[str, Any] | None = None) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), tuple(names),
                   meta=dict(meta or {}))

    @classmethod
    def _from_checked(cls, xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, names: tuple[str, ...],
                      box_masks: BoxMasks | None, meta: dict[str, Any],
                      thresholds: dict[str, float] | None = None) -> Detections:
        """Build from arrays that already have the right dtypes and shapes (the Detector's own), skipping the
        conversions and checks of ``__init__``, which are a visible share of a frame's postprocessing."""
        out = cls.__new__(cls)
        out.xyxy, out.scores, out.class_ids, out.names = xyxy, scores, class_ids, names
        out.masks, out.meta, out.box_masks, out.speed = None, meta, box_masks, {}
        out.thresholds = thresholds if thresholds is not None else {}
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
        if isinstance(idx, np.ndarray) and idx.size == 0:
            idx = np.zeros(0, np.int64)  # an empty list selects nothing (numpy would make it float)
        if isinstance(idx, np.ndarray) and idx.dtype == bool and len(idx) != len(self):
            raise IndexError(f"boolean filter has length {len(idx)}, detections have {len(self)}")
        return Detections(self.xyxy[idx], self.scores[idx], self.class_ids[idx], self.names,
                          None if self.masks is None else self.masks[idx], dict(self.meta),
                          None if self.box_masks is None else self.box_masks.subset(idx), dict(self.speed),
                          dict(self.thresholds))

    def __eq__(self, other: object) -> bool:
        """Same boxes, scores, classes and class names (masks, timing and meta are not compared)."""
        if not isinstance(other, Detections):
            return NotImplemented
        return (self.names == other.names and np.array_equal(self.xyxy, other.xyxy)
                and np.array_equal(self.scores, other.scores) and np.array_equal(self.class_ids, other.class_ids))

    __hash__ = None  # mutable arrays: not hashable

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}: {n}" for name, n in self.summary()["per_class"].items())
        best = f", best {float(self.scores.max()):.2f}" if len(self) else ""
        return f"Detections({len(self)} boxes{': ' + counts if counts else ''}{best})"

    @property
    def class_names(self) -> list[str]:
        """Per-detection class name."""
        return [self.names[c] if 0 <= c < len(self.names) else str(c) for c in self.class_ids.tolist()]

    @property
    def area(self) -> np.ndarray:
        return (self.xyxy[:, 2] - self.xyxy[:, 0]) * (self.xyxy[:, 3] - self.xyxy[:, 1])

    @property
    def verdict(self) -> Verdict:
        """NG when a detection scores at or above its class's threshold (the package's calibrated one, else any
        detection counts), NOT_INSPECTED for a frame that failed the camera-health check, else OK."""
        if self.meta.get("inspected") is False:
            problems = (self.meta.get("health") or {}).get("problems") or ["not inspected"]
            return Verdict("NOT_INSPECTED", tuple(problems))
        reasons = []
        for box, score, _, name in self:
            limit = self.thresholds.get(name)
            if limit is None or score >= limit:
                x1, y1, x2, y2 = (round(float(v)) for v in box)
                at = f" >= {limit:.3f}" if limit is not None else ""
                reasons.append(f"{name} {score:.3f}{at} at [{x1}, {y1}, {x2}, {y2}]")
        return Verdict("NG", tuple(reasons)) if reasons else Verdict("OK")

    def mask(self, i: int) -> np.ndarray:
        """Detection i's full-frame (H, W) bool mask, pasted on demand."""
        if self.masks is not None:
            return self.masks[i]
        if self.box_masks is None:
            raise ValueError("these detections have no masks (Detector(..., masks=True) computes them)")
        return self.box_masks.full(i)

    def by_class(self) -> dict[str, Detections]:
        """Detections grouped by class name (only classes that occur)."""
        return {self.names[c] if c < len(self.names) else str(c): self[self.class_ids == c]
                for c in sorted(set(self.class_ids.tolist()))}

    def summary(self) -> dict[str, Any]:
        """Counts per class and the best score per class."""
        best: dict[str, float] = {}
        for _, score, _, name in self:
            best[name] = max(best.get(name, 0.0), score)
        return {"count": len(self), "per_class": dict(Counter(self.class_names)),
                "best_score": {k: round(v, 5) for k, v in best.items()}}

    def to_dict(self) -> dict[str, Any]:
        out = {"detections": [{"box": [round(float(v), 2) for v in box], "score": round(score, 5),
                               "class_id": cid, "class_name": name} for box, score, cid, name in self]}
        if self.meta:
            out["meta"] = self.meta
        if self.speed:
            out["speed"] = self.speed
        out["verdict"] = self.verdict.to_dict()
        return _strict_json(out)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_json(cls, text: str | dict[str, Any], names: tuple[str, ...] | list[str] | None = None) -> Detections:
        """The inverse of :meth:`to_json` (boxes, scores, classes, meta); class names from the records unless
        ``names`` is given."""
        data = json.loads(text) if isinstance(text, str) else text
        if not isinstance(data, dict) or not isinstance(data.get("detections"), list):
            raise ValueError("expected an object with a 'detections' list (what Detections.to_json writes)")
        rows = data["detections"]
        try:
            xyxy = [r["box"] for r in rows]
            scores = [r["score"] for r in rows]
            ids = [int(r["class_id"]) for r in rows]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"a detection lacks box, score or class_id ({exc})") from None
        if names is None:
            known = {int(r["class_id"]): str(r.get("class_name", r["class_id"])) for r in rows}
            names = [known.get(i, str(i)) for i in range(max(ids) + 1)] if ids else []
        return cls(np.asarray(xyxy, np.float32).reshape(-1, 4), scores, ids, tuple(names),
                   meta=dict(data.get("meta") or {}), speed=dict(data.get("speed") or {}))

    def to_coco(self, image_id: int | str, category_ids: list[int] | None = None) -> list[dict[str, Any]]:
        """COCO results records (``bbox`` as x, y, width, height) for ``image_id``; category ids are the class
        ids, or ``category_ids[class_id]`` when the dataset numbers them otherwise."""
        out = []
        for box, score, cid, _ in self:
            x1, y1, x2, y2 = (float(v) for v in box)
            category = category_ids[cid] if category_ids is not None else cid
            out.append({"image_id": image_id, "category_id": int(category),
                        "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                        "score": round(score, 5)})
        return out

    def to_supervision(self) -> Any:
        """As ``supervision.Detections`` (the ``supervision`` extra): boxes, confidences, class ids, names."""
        try:
            import supervision as sv
        except ImportError:
            raise ImportError("to_supervision needs the 'supervision' extra: pip install "
                              "'diffdefect-edge[supervision]'") from None
        masks = self.masks
        if masks is None and self.box_masks is not None and len(self):
            masks = np.stack([self.box_masks.full(i) for i in range(len(self))])
        return sv.Detections(xyxy=self.xyxy.astype(np.float32), confidence=self.scores.astype(np.float32),
                             class_id=self.class_ids.astype(int), mask=masks,
                             data={"class_name": np.asarray(self.class_names, dtype=object)})

    @classmethod
    def from_supervision(cls, detections: Any, names: tuple[str, ...] | list[str] = ()) -> Detections:
        """From ``supervision.Detections`` (missing confidences become 1, missing class ids 0)."""
        n = len(detections.xyxy)
        scores = detections.confidence if detections.confidence is not None else np.ones(n, np.float32)
        ids = detections.class_id if detections.class_id is not None else np.zeros(n, np.int64)
        return cls(detections.xyxy, scores, ids, tuple(names), masks=detections.mask)

    def draw(self, frame: np.ndarray, labels: bool = True, thickness: int = 2, copy: bool = True) -> np.ndarray:
        """Boxes (and masks) with 'name score' labels on a frame of any size (BGR, gray or BGRA; boxes outside
        it are clipped); returns the drawn frame: BGR for a gray frame, else in the frame's channel layout."""
        canvas = frame.copy() if copy else frame
        if not isinstance(canvas, np.ndarray) or canvas.dtype != np.uint8 or canvas.ndim not in (2, 3):
            raise ValueError(f"draw takes a uint8 (H, W), (H, W, 3) or (H, W, 4) frame, got "
                             f"{getattr(canvas, 'dtype', type(canvas).__name__)} {getattr(canvas, 'shape', '')}")
        gray = canvas.ndim == 2
        if gray:
            canvas = cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR)
        h, w = canvas.shape[:2]
        channels = canvas.shape[2]
        if channels not in (3, 4):
            raise ValueError(f"draw takes 1, 3 or 4 channels, got {channels}")
        paint = (lambda c: (*c, 255)) if channels == 4 else (lambda c: c)
        if (self.masks is not None or self.box_masks is not None) and len(self):
            overlay = canvas.copy()
            for i, cid in enumerate(self.class_ids):
                x1, y1, x2, y2 = box_region(self.xyxy[i], w, h)
                if self.masks is not None and self.masks.shape[1:] == (h, w):
                    region = self.masks[i, y1:y2, x1:x2]
                elif self.box_masks is not None and self.box_masks.frame_shape == (h, w):
                    region = self.box_masks.in_box(i)
                else:
                    continue  # masks of another frame size: boxes only
                overlay[y1:y2, x1:x2][region] = paint(color_for(cid))
            cv2.addWeighted(overlay, 0.35, canvas, 0.65, 0, dst=canvas)
        for box, score, cid, name in self:
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            color = paint(color_for(cid))
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
            if labels:
                text = f"{name} {score:.2f}"
                (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
                ty = y1 - 4 if y1 - th - base - 4 >= 0 else y1 + th + 4
                cv2.rectangle(canvas, (x1, ty - th - 2), (x1 + tw + 2, ty + base - 2), color, -1)
                cv2.putText(canvas, text, (x1 + 1, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, paint((255, 255, 255)), 1,
                            cv2.LINE_AA)
        return canvas

"""Per-box instance masks kept small: each box's mask at model (canvas) resolution, pasted into frame pixels
only when asked, so a large frame with many boxes never holds one full-frame array per box."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def box_region(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """The integer pixel region ``[x1, x2) x [y1, y2)`` a box covers, clipped to the frame."""
    x1, y1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x2, y2 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
    return x1, y1, max(x1, x2), max(y1, y2)


@dataclass(frozen=True)
class BoxMasks:
    """``crops[i]``: box i's mask (bool) at model resolution, covering the box; pasted over the box's region."""

    crops: tuple[np.ndarray, ...]
    boxes: np.ndarray  # (N, 4) xyxy frame pixels, the boxes the crops cover
    frame_shape: tuple[int, int]  # (H, W)

    def __len__(self) -> int:
        return len(self.crops)

    def subset(self, index: np.ndarray | slice | list[int]) -> BoxMasks:
        picked = np.arange(len(self.crops))[index]
        return BoxMasks(tuple(self.crops[int(i)] for i in picked), self.boxes[index], self.frame_shape)

    def in_box(self, i: int) -> np.ndarray:
        """Box i's mask over its pixel region only (h, w) bool, in frame pixels."""
        x1, y1, x2, y2 = box_region(self.boxes[i], self.frame_shape[1], self.frame_shape[0])
        if x2 == x1 or y2 == y1:
            return np.zeros((y2 - y1, x2 - x1), bool)
        crop = self.crops[i].astype(np.uint8)
        if crop.size == 0:
            return np.zeros((y2 - y1, x2 - x1), bool)
        return cv2.resize(crop, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST).astype(bool)

    def full(self, i: int) -> np.ndarray:
        """Box i's mask as a full-frame (H, W) bool array."""
        out = np.zeros(self.frame_shape, bool)
        x1, y1, x2, y2 = box_region(self.boxes[i], self.frame_shape[1], self.frame_shape[0])
        out[y1:y2, x1:x2] = self.in_box(i)
        return out

    def area(self, i: int) -> int:
        return int(self.in_box(i).sum())

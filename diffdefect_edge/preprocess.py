"""Frame checks and the letterbox rule, shared by training, export and the runtime.

The letterbox rule: scale the frame by ``min(S / h, S / w)`` (smaller frames are scaled up), resize with
bilinear interpolation to ``round(w * scale) x round(h * scale)``, and pad it centred in an S x S canvas filled
with ``pad_value``. :class:`Letterbox` keeps the numbers needed to map boxes back to frame pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114
# what the models take: RGB, (x - MEAN) / STD per channel (i.e. x / 255)
MEAN = (0.0, 0.0, 0.0)
STD = (255.0, 255.0, 255.0)


@dataclass(frozen=True)
class Letterbox:
    """How one frame was placed on the model canvas: ``canvas = frame * scale + (pad_x, pad_y)``."""

    scale: float
    pad_x: int
    pad_y: int
    frame_width: int
    frame_height: int

    def boxes_to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """Map (N, 4) xyxy boxes from canvas pixels back to frame pixels, clipped to the frame."""
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, [0, 2]] = (boxes[:, [0, 2]] - self.pad_x) / self.scale
        out[:, [1, 3]] = (boxes[:, [1, 3]] - self.pad_y) / self.scale
        out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, self.frame_width)
        out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, self.frame_height)
        return out

    def boxes_to_canvas(self, boxes: np.ndarray) -> np.ndarray:
        """Map (N, 4) xyxy boxes from frame pixels to canvas pixels."""
        out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * self.scale
        out[:, [0, 2]] += self.pad_x
        out[:, [1, 3]] += self.pad_y
        return out


def letterbox_params(width: int, height: int, size: int) -> Letterbox:
    scale = min(size / width, size / height)
    new_w, new_h = resized_size(width, height, scale)
    return Letterbox(scale=scale, pad_x=(size - new_w) // 2, pad_y=(size - new_h) // 2,
                     frame_width=width, frame_height=height)


def resized_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(width, height) of the frame once scaled onto the canvas."""
    return max(1, round(width * scale)), max(1, round(height * scale))


class CanvasWriter:
    """Letterboxes images of one shape and dtype into one canvas that it reuses.

    The placement and the pad bands are set once: each image then costs one resize straight into the canvas.
    A camera loop's frames all have one shape, so the Detector keeps one writer per thread (the canvas is
    overwritten by the next :meth:`write`).
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, size: int, pad_value: int = PAD_VALUE,
                 interpolation: int = cv2.INTER_LINEAR) -> None:
        self.shape, self.dtype, self.interpolation = tuple(shape), np.dtype(dtype), interpolation
        h, w = self.shape[:2]
        self.placement = letterbox_params(w, h, size)
        self.new_size = resized_size(w, h, self.placement.scale)
        self.canvas = np.full((size, size) + self.shape[2:], pad_value, dtype=self.dtype)
        new_w, new_h = self.new_size
        lb = self.placement
        self.region = self.canvas[lb.pad_y:lb.pad_y + new_h, lb.pad_x:lb.pad_x + new_w]
        # OpenCV resizes into a 2-D or 3-channel view in place (a one-channel 3-D view it cannot take)
        self._dst = self.region if self.region.ndim == 2 or self.region.shape[2] != 1 else None

    def write(self, image: np.ndarray) -> np.ndarray:
        """Letterbox ``image`` (of this writer's shape and dtype) into the canvas and return the canvas."""
        if image.shape != self.shape or image.dtype != self.dtype:
            raise ValueError(f"image has shape {image.shape} and dtype {image.dtype}; this CanvasWriter takes "
                             f"{self.shape} {self.dtype}")
        if self.new_size == (self.shape[1], self.shape[0]):
            self.region[...] = image.reshape(self.region.shape)
        else:
            resized = cv2.resize(image, self.new_size, dst=self._dst, interpolation=self.interpolation)
            if resized is not self.region:
                self.region[...] = resized.reshape(self.region.shape)
        return self.canvas


def letterbox(image: np.ndarray, size: int, pad_value: int = PAD_VALUE,
              interpolation: int = cv2.INTER_LINEAR) -> tuple[np.ndarray, Letterbox]:
    """Place ``image`` (H, W[, C]) on a new ``size`` x ``size`` canvas; returns the canvas and the placement."""
    writer = CanvasWriter(image.shape, image.dtype, size, pad_value, interpolation)
    return writer.write(image), writer.placement


COLOR_ORDERS = ("bgr", "rgb", "bgra", "rgba", "gray")


def to_bgr(frame: object, color: str = "bgr", name: str = "frame") -> np.ndarray:
    """Check a frame and return it as a C-contiguous BGR uint8 (H, W, 3) array.

    Accepts uint8 (H, W, 3) BGR or RGB, (H, W, 4) BGRA or RGBA, and gray (H, W) or (H, W, 1); ``color`` names
    the channel order (any case). A strided view (an ROI crop, a flipped frame) is copied once. Anything else
    raises ValueError saying what was expected; the caller's frame is never modified.
    """
    expected = "a uint8 numpy array of shape (H, W, 3) BGR, (H, W, 4) BGRA, (H, W) or (H, W, 1) gray"
    order = color.lower() if isinstance(color, str) else color
    if order not in COLOR_ORDERS:
        raise ValueError(f"color must be one of {COLOR_ORDERS} (any case), got {color!r}")
    if frame is None:
        raise ValueError(f"{name} is None; expected {expected} (did the camera return no frame?)")
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"{name} is a {type(frame).__name__}; expected {expected}")
    if frame.size == 0:
        raise ValueError(f"{name} is empty (shape {frame.shape}); expected {expected}")
    if frame.dtype != np.uint8:
        if np.issubdtype(frame.dtype, np.floating) and not np.isfinite(frame).all():
            raise ValueError(f"{name} has NaN or infinite values (dtype {frame.dtype}); expected {expected}")
        raise ValueError(f"{name} has dtype {frame.dtype}; expected {expected}")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_GRAY2BGR)
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise ValueError(f"{name} has shape {frame.shape}; expected {expected}")
    frame = np.ascontiguousarray(frame)  # no copy when it already is
    four = frame.shape[2] == 4
    if order in ("rgb", "rgba"):
        return cv2.cvtColor(frame, cv2.COLOR_RGBA2BGR if four else cv2.COLOR_RGB2BGR)
    return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR) if four else frame


def normalize_nchw(canvases: np.ndarray, mean: list[float], std: list[float], rgb: bool = True) -> np.ndarray:
    """(N, S, S, 3) BGR uint8 canvases -> (N, 3, S, S) float32 the model takes: RGB, ``(x - mean) / std``.

    One OpenCV pass (``cv2.dnn.blobFromImages``: channel swap, mean, scale, HWC->CHW) instead of a chain of numpy
    passes over the frame; a per-channel std is applied afterwards.
    """
    n, h, w = canvases.shape[:3]
    if n == 0:
        return np.empty((0, 3, h, w), np.float32)
    uniform_std = len(set(std)) == 1
    blob = cv2.dnn.blobFromImages(list(canvases), scalefactor=1.0 / float(std[0]) if uniform_std else 1.0,
                                  size=(w, h), mean=tuple(float(m) for m in mean), swapRB=rgb, crop=False)
    if not uniform_std:
        blob /= np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    return blob

"""Augmentations that keep boxes and masks right: flips, scale/translate jitter, brightness/contrast.

All operate on a BGR uint8 image (H, W, 3), boxes (N, 4) xyxy pixels, class ids (N,) and an optional class-
index mask (H, W) uint8, and return the same four things. Geometric steps move boxes and masks with the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from diffdefect_edge.preprocess import PAD_VALUE


@dataclass
class AugmentConfig:
    hflip: float = 0.5  # probability
    vflip: float = 0.5
    scale: tuple[float, float] = (0.75, 1.25)  # zoom range of the affine jitter
    translate: float = 0.1  # fraction of the image size
    brightness: float = 0.2  # +- fraction of full range
    contrast: float = 0.2  # +- gain fraction
    min_box_visibility: float = 0.3  # drop a box when less than this fraction of it stays in the image
    mosaic: float = 0.0  # probability that an item is a mosaic of four canvases (training/data/mosaic.py)
    close_mosaic: int = 0  # the last this many epochs of a training stage run without mosaic

    def __post_init__(self) -> None:
        for name in ("hflip", "vflip", "mosaic", "min_box_visibility"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.close_mosaic < 0:
            raise ValueError(f"close_mosaic must be >= 0, got {self.close_mosaic}")
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {self.scale}")


Sample = tuple[np.ndarray, np.ndarray, np.ndarray, "np.ndarray | None"]


def flip(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, mask: np.ndarray | None,
         horizontal: bool) -> Sample:
    h, w = image.shape[:2]
    image = np.ascontiguousarray(image[:, ::-1] if horizontal else image[::-1])
    boxes = boxes.copy()
    if horizontal:
        boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    else:
        boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
    if mask is not None:
        mask = np.ascontiguousarray(mask[:, ::-1] if horizontal else mask[::-1])
    return image, boxes, labels, mask


def affine_jitter(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, mask: np.ndarray | None,
                  zoom: float, shift_x: float, shift_y: float, min_visibility: float) -> Sample:
    """Zoom about the centre and shift (pixels); boxes are transformed, clipped, and dropped when mostly out."""
    h, w = image.shape[:2]
    m = np.array([[zoom, 0, (1 - zoom) * w / 2 + shift_x], [0, zoom, (1 - zoom) * h / 2 + shift_y]], np.float32)
    image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(PAD_VALUE,) * 3)
    if mask is not None:
        mask = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
    moved = boxes * zoom
    moved[:, [0, 2]] += m[0, 2]
    moved[:, [1, 3]] += m[1, 2]
    clipped = moved.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, w)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, h)
    area = lambda b: (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)  # noqa: E731
    keep = (area(clipped) >= min_visibility * np.maximum(area(moved), 1e-6)) \
        & (clipped[:, 2] - clipped[:, 0] >= 2) & (clipped[:, 3] - clipped[:, 1] >= 2)
    return image, clipped[keep], labels[keep], mask


def photometric(image: np.ndarray, gain: float, bias: float) -> np.ndarray:
    """``image * gain + bias`` around mid-grey, saturated to uint8."""
    lut = np.clip((np.arange(256, dtype=np.float32) - 128) * gain + 128 + bias, 0, 255).astype(np.uint8)
    return cv2.LUT(image, lut)


def augment(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, mask: np.ndarray | None,
            cfg: AugmentConfig, rng: np.random.Generator) -> Sample:
    image, boxes, labels, mask, _ = augment_with_matrix(image, boxes, labels, mask, cfg, rng)
    return image, boxes, labels, mask


def augment_with_matrix(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, mask: np.ndarray | None,
                        cfg: AugmentConfig, rng: np.random.Generator
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """:func:`augment`, also returning the 3x3 matrix that maps original to augmented pixel coordinates (the
    same map the boxes went through), so feature maps aligned with the image can be moved the same way."""
    h, w = image.shape[:2]
    matrix = np.eye(3)
    if rng.random() < cfg.hflip:
        image, boxes, labels, mask = flip(image, boxes, labels, mask, horizontal=True)
        matrix = np.array([[-1.0, 0, w], [0, 1, 0], [0, 0, 1]]) @ matrix
    if rng.random() < cfg.vflip:
        image, boxes, labels, mask = flip(image, boxes, labels, mask, horizontal=False)
        matrix = np.array([[1.0, 0, 0], [0, -1, h], [0, 0, 1]]) @ matrix
    lo, hi = cfg.scale
    if hi > lo or lo != 1.0 or cfg.translate > 0:
        zoom = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        tx, ty = rng.uniform(-cfg.translate, cfg.translate, 2) * (w, h)
        image, boxes, labels, mask = affine_jitter(image, boxes, labels, mask, zoom, tx, ty, cfg.min_box_visibility)
        matrix = np.array([[zoom, 0, (1 - zoom) * w / 2 + tx], [0, zoom, (1 - zoom) * h / 2 + ty], [0, 0, 1]]) @ matrix
    if cfg.brightness > 0 or cfg.contrast > 0:
        gain = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
        bias = 255.0 * rng.uniform(-cfg.brightness, cfg.brightness)
        image = photometric(image, gain, bias)
    return image, boxes, labels, mask, matrix

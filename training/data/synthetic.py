"""Synthetic steel-strip images with the six NEU-DET defect kinds, boxes and pixel masks.

The texture has grain, rolling marks (streaks along the rolling direction, here horizontal), an
illumination gradient and sensor noise. Each defect is drawn into its own region at a contrast drawn
from ``contrast``; near the low end it sits inside the texture's own variation ("non-salient"), which is
what a light detector misses. Image ``i`` of seed ``s`` depends only on ``(s, i)``, so the first N images
are the same whatever ``num_images`` is.

Output is a VOC folder: ``JPEGImages/*.png`` (grayscale), ``Annotations/*.xml``, ``SegmentationClass/*.png``
(0 background, k + 1 for class k), ``classes.txt`` and ``synth.json`` (the config and per-box contrast).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from training.data.voc import write_voc_xml

CLASS_NAMES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
DEFECT_AMPLITUDE = 0.28  # intensity change (image range 0..1) of a defect at contrast 1.0


@dataclass(frozen=True)
class SynthConfig:
    num_images: int = 200
    size: int = 200
    seed: int = 0
    contrast: tuple[float, float] = (0.15, 1.0)  # defect contrast drawn uniformly from this range
    max_defects: int = 3
    background_fraction: float = 0.1  # share of defect-free images

    def __post_init__(self) -> None:
        lo, hi = self.contrast
        if not 0 < lo <= hi:
            raise ValueError(f"contrast must be a range 0 < low <= high, got {self.contrast}")
        if self.size < 64:
            raise ValueError(f"size must be at least 64 pixels, got {self.size}")
        if self.num_images < 1 or self.max_defects < 1:
            raise ValueError("num_images and max_defects must be at least 1")
        if not 0 <= self.background_fraction <= 1:
            raise ValueError(f"background_fraction must be in [0, 1], got {self.background_fraction}")


@dataclass
class SynthImage:
    image: np.ndarray  # (H, W) uint8
    mask: np.ndarray  # (H, W) uint8 class-index mask
    boxes: np.ndarray  # (N, 4) float32 xyxy
    class_ids: np.ndarray  # (N,) int64
    contrasts: np.ndarray  # (N,) float32


def _blurred_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    noise = rng.standard_normal(shape).astype(np.float32)
    out = cv2.GaussianBlur(noise, (0, 0), sigma)
    return out / (out.std() + 1e-6)


def steel_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Background in [0, 1]: base level + grain + rolling marks + illumination gradient."""
    h = w = size
    img = np.full((h, w), rng.uniform(0.38, 0.6), np.float32)
    img += 0.035 * _blurred_noise(rng, (h, w), rng.uniform(0.8, 1.6))  # grain
    streaks = cv2.resize(rng.standard_normal((h, max(2, w // 24))).astype(np.float32), (w, h),
                         interpolation=cv2.INTER_CUBIC)
    img += 0.03 * cv2.GaussianBlur(streaks, (0, 0), 0.7)  # rolling marks along x
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / size
    gx, gy = rng.uniform(-0.12, 0.12, size=2)
    img += gx * (xx - 0.5) + gy * (yy - 0.5)  # illumination gradient
    img -= 0.06 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2)  # vignetting
    return img


def _crazing(rng, rh, rw):
    canvas = np.zeros((rh, rw), np.float32)
    for _ in range(rng.integers(4, 9)):
        pts = [rng.uniform([0, 0], [rw, rh])]
        for _ in range(rng.integers(3, 7)):
            step = rng.normal(0, 1, 2) * [rw / 4, rh / 6]
            pts.append(np.clip(pts[-1] + step, 0, [rw - 1, rh - 1]))
        cv2.polylines(canvas, [np.array(pts, np.int32)], False, -1.0, 1, cv2.LINE_8)
    return canvas


def _inclusion(rng, rh, rw):
    canvas = np.zeros((rh, rw), np.float32)
    for _ in range(rng.integers(1, 4)):
        center = (int(rng.uniform(0.2, 0.8) * rw), int(rng.uniform(0.2, 0.8) * rh))
        axes = (int(rng.uniform(0.15, 0.45) * rw), max(1, int(rng.uniform(0.05, 0.15) * rh)))
        cv2.ellipse(canvas, center, axes, rng.uniform(-15, 15), 0, 360, -1.0, -1)
    return canvas


def _patches(rng, rh, rw):
    blob = cv2.GaussianBlur(rng.standard_normal((rh, rw)).astype(np.float32), (0, 0), min(rh, rw) / 8)
    yy, xx = np.mgrid[0:rh, 0:rw].astype(np.float32)
    ellipse = ((xx - rw / 2) / (rw / 2)) ** 2 + ((yy - rh / 2) / (rh / 2)) ** 2
    shape = (blob / (blob.std() + 1e-6) - 2.0 * ellipse + 1.0) > 0
    sign = -1.0 if rng.random() < 0.8 else 1.0
    return np.where(shape, sign * 0.8, 0.0).astype(np.float32)


def _pitted(rng, rh, rw):
    canvas = np.zeros((rh, rw), np.float32)
    for _ in range(rng.integers(10, 35)):
        center = (int(rng.uniform(0, rw)), int(rng.uniform(0, rh)))
        cv2.circle(canvas, center, int(rng.integers(1, 4)), -1.0, -1)
    return canvas


def _rolled_in_scale(rng, rh, rw):
    canvas = np.zeros((rh, rw), np.float32)
    for _ in range(rng.integers(8, 25)):
        center = (int(rng.uniform(0, rw)), int(rng.uniform(0, rh)))
        axes = (int(rng.integers(2, 8)), int(rng.integers(1, 3)))
        cv2.ellipse(canvas, center, axes, rng.uniform(-10, 10), 0, 360, float(rng.choice([-1.0, 0.7])), -1)
    return canvas


def _scratches(rng, rh, rw):
    canvas = np.zeros((rh, rw), np.float32)
    sign = float(rng.choice([-1.0, 1.0]))
    for _ in range(rng.integers(1, 3)):
        x0, x1 = rng.uniform(0, rw, size=2)
        cv2.line(canvas, (int(x0), 0), (int(x1), rh - 1), sign, int(rng.integers(1, 3)), cv2.LINE_8)
    return canvas


# (drawer, region height range, region width range) as fractions of the image size, in CLASS_NAMES order
DEFECTS = [
    (_crazing, (0.2, 0.45), (0.2, 0.45)),
    (_inclusion, (0.08, 0.2), (0.15, 0.35)),
    (_patches, (0.2, 0.45), (0.2, 0.45)),
    (_pitted, (0.15, 0.35), (0.15, 0.35)),
    (_rolled_in_scale, (0.15, 0.35), (0.2, 0.45)),
    (_scratches, (0.35, 0.9), (0.04, 0.2)),
]


def synthesize_image(config: SynthConfig, index: int) -> SynthImage:
    """Image ``index`` of the dataset defined by ``config`` (deterministic)."""
    rng = np.random.default_rng([config.seed, index])
    size = config.size
    img = steel_texture(rng, size)
    mask = np.zeros((size, size), np.uint8)
    boxes, class_ids, contrasts = [], [], []
    n_defects = 0 if rng.random() < config.background_fraction else int(rng.integers(1, config.max_defects + 1))
    for _ in range(n_defects):
        cls = int(rng.integers(len(DEFECTS)))
        draw, hr, wr = DEFECTS[cls]
        for _attempt in range(20):  # find a free region: defects never overlap, so each mask matches its box
            rh, rw = int(rng.uniform(*hr) * size), int(rng.uniform(*wr) * size)
            y0, x0 = int(rng.integers(0, size - rh + 1)), int(rng.integers(0, size - rw + 1))
            if not mask[max(0, y0 - 2):y0 + rh + 2, max(0, x0 - 2):x0 + rw + 2].any():
                break
        else:
            continue
        profile = draw(rng, rh, rw)
        region = profile != 0
        if not region.any():
            continue
        contrast = float(rng.uniform(*config.contrast))
        img[y0:y0 + rh, x0:x0 + rw] += DEFECT_AMPLITUDE * contrast * profile
        mask[y0:y0 + rh, x0:x0 + rw][region] = cls + 1
        ys, xs = np.nonzero(region)
        boxes.append([x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1])
        class_ids.append(cls)
        contrasts.append(contrast)
    img += rng.normal(0, 0.012, img.shape).astype(np.float32)  # sensor noise
    image = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    return SynthImage(image, mask, np.array(boxes, np.float32).reshape(-1, 4), np.array(class_ids, np.int64),
                      np.array(contrasts, np.float32))


def write_synthetic_dataset(out: str | Path, config: SynthConfig, overwrite: bool = False) -> Path:
    """Write the dataset as a VOC folder at ``out`` atomically (temp dir, then rename).

    An existing non-empty ``out`` is refused unless ``overwrite`` (which replaces it only on success).
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: exists and is not empty (pass overwrite=True / --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for sub in ("JPEGImages", "Annotations", "SegmentationClass"):
            (tmp / sub).mkdir()
        per_image = []
        for i in range(config.num_images):
            item = synthesize_image(config, i)
            stem = f"synth_{i:05d}"
            cv2.imwrite(str(tmp / "JPEGImages" / f"{stem}.png"), item.image)
            cv2.imwrite(str(tmp / "SegmentationClass" / f"{stem}.png"), item.mask)
            objects = [(CLASS_NAMES[c], b) for c, b in zip(item.class_ids, item.boxes)]
            write_voc_xml(tmp / "Annotations" / f"{stem}.xml", f"{stem}.png", config.size, config.size, 1, objects)
            per_image.append({"image": stem, "contrast": [round(float(c), 4) for c in item.contrasts]})
        (tmp / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
        meta = {"generator": "diffdefect-edge synthetic steel", "config": dataclasses.asdict(config),
                "images": per_image}
        (tmp / "synth.json").write_text(json.dumps(meta, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_contrasts(root: str | Path) -> dict[str, list[float]] | None:
    """Each image's per-box defect contrast from a synthetic dataset's ``synth.json`` (image stem -> contrasts, in
    the order of its annotation's objects); None for a dataset that is not synthetic."""
    path = Path(root) / "synth.json"
    if not path.is_file():
        return None
    meta = json.loads(path.read_text())
    return {item["image"]: [float(c) for c in item["contrast"]] for item in meta.get("images", [])}

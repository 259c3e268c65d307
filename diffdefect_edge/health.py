"""Camera health: cheap per-frame statistics, and the bounds outside which a frame is not inspected.

A lens cap, a failed light or a defocused camera gives frames on which a detector reports nonsense (an
all-black frame can yield dozens of boxes). Each frame's exposure (mean gray level), contrast (standard
deviation) and sharpness (variance of the Laplacian) are measured on a small gray copy, so the check costs
far less than the inference (every few pixels are sampled, not the whole frame); a frame outside :class:`HealthBounds` is flagged and skipped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

PROBE_SIZE = 128  # the statistics are taken on a sample at most this wide


@dataclass(frozen=True)
class HealthBounds:
    """Exposure within ``[min_mean, max_mean]``, contrast at least ``min_contrast``, sharpness at least
    ``min_sharpness`` (None: not checked; it depends on the texture, so set it from good frames of the line)."""

    min_mean: float = 8.0
    max_mean: float = 247.0
    min_contrast: float = 2.0
    min_sharpness: float | None = None

    def __post_init__(self) -> None:
        for name in ("min_mean", "max_mean", "min_contrast"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 255:
                raise ValueError(f"HealthBounds.{name} must be a number in [0, 255], got {value!r}")
        if self.min_mean >= self.max_mean:
            raise ValueError(f"HealthBounds.min_mean ({self.min_mean}) must be below max_mean ({self.max_mean})")
        if self.min_sharpness is not None and (isinstance(self.min_sharpness, bool) or self.min_sharpness < 0):
            raise ValueError(f"HealthBounds.min_sharpness must be >= 0 or None, got {self.min_sharpness!r}")


@dataclass(frozen=True)
class FrameHealth:
    mean: float
    contrast: float
    sharpness: float
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        d = asdict(self)
        d["problems"] = list(self.problems)
        d["ok"] = self.ok
        return d


def measure(bgr: np.ndarray, bounds: HealthBounds | None = None) -> FrameHealth:
    """Exposure, contrast and sharpness of a BGR uint8 frame, and which bounds it breaks."""
    step = max(1, -(-max(bgr.shape[:2]) // PROBE_SIZE))
    # every step-th pixel, not an average: averaging would smooth away the contrast and sharpness measured
    small = np.ascontiguousarray(bgr[::step, ::step]) if step > 1 else bgr
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    mean, std = cv2.meanStdDev(gray)
    sharpness = float(cv2.Laplacian(gray, cv2.CV_32F).var())
    mean_v, std_v = float(mean[0, 0]), float(std[0, 0])
    problems: list[str] = []
    if bounds is not None:
        if mean_v < bounds.min_mean:
            problems.append(f"underexposed (mean {mean_v:.1f} < {bounds.min_mean})")
        if mean_v > bounds.max_mean:
            problems.append(f"overexposed (mean {mean_v:.1f} > {bounds.max_mean})")
        if std_v < bounds.min_contrast:
            problems.append(f"no contrast (std {std_v:.2f} < {bounds.min_contrast})")
        if bounds.min_sharpness is not None and sharpness < bounds.min_sharpness:
            problems.append(f"blurred (sharpness {sharpness:.1f} < {bounds.min_sharpness})")
    return FrameHealth(round(mean_v, 2), round(std_v, 3), round(sharpness, 2), tuple(problems))

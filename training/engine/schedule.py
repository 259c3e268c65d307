"""Learning-rate schedules: a warm-up, then a cosine decay to a floor (a fraction of the base rate).

Two warm-up forms are used by the stages, and each stage keeps its own so that a run's numbers do not move:

- ``"ramp"`` (detector stages): the warm-up ramps linearly from 10% to 100% of the base rate, then the cosine
  runs over the remaining steps.
- ``"scale"`` (DDPM and ResVAE): the cosine runs over all steps and the warm-up multiplies it by
  ``(step + 1) / warmup`` until that reaches 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WarmupCosine:
    base: float
    total_steps: int
    warmup_steps: int
    floor: float  # the final rate as a fraction of ``base``
    warmup: str = "ramp"  # "ramp" or "scale", see the module docstring

    def __post_init__(self) -> None:
        if self.warmup not in ("ramp", "scale"):
            raise ValueError(f"warmup must be 'ramp' or 'scale', got {self.warmup!r}")

    def group_rate(self, step: int, warmup_from: float | None) -> float:
        """The rate of a parameter group that warms up from ``warmup_from`` (the detector's biases, YOLO-style:
        they start high and fall to the schedule's rate by the end of the warm-up) or, when None, the schedule's."""
        rate = self(step)
        if warmup_from is None or step >= self.warmup_steps:
            return rate
        return warmup_from + (rate - warmup_from) * step / max(1, self.warmup_steps)

    def __call__(self, step: int) -> float:
        if self.warmup == "scale":
            ramp = min(1.0, (step + 1) / max(1, self.warmup_steps))
            cosine = 0.5 * (1 + math.cos(math.pi * step / self.total_steps))
            return self.base * ramp * (self.floor + (1 - self.floor) * cosine)
        if step < self.warmup_steps:
            return self.base * (0.1 + 0.9 * step / max(1, self.warmup_steps))
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return self.base * (self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

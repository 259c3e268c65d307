"""Timing calls alternately, so that the machine's drifts (other tenants, frequency) hit every call alike."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np


def alternating_medians(calls: Sequence[Callable[[], object]], rounds: int, warmup: int = 1) -> list[float]:
    """Median seconds of each call, the calls made in the given order once per round (after ``warmup`` untimed
    rounds)."""
    for _ in range(warmup):
        for call in calls:
            call()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for call, out in zip(calls, times):
            start = time.perf_counter()
            call()
            out.append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]

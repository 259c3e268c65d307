"""Latency statistics shared by the camera loop, ``Detector.benchmark`` and the ``bench`` command."""

from __future__ import annotations

import statistics


def percentile(sorted_values: list[float], q: float) -> float:
    """The value at quantile ``q`` of an ascending list (nearest rank); NaN for an empty list."""
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))]


def latency_stats(times_ms: list[float], prefix: str) -> dict[str, float]:
    """``{prefix}_mean_ms``, ``_p50_ms``, ``_p95_ms`` and ``_p99_ms`` of the given times."""
    ordered = sorted(times_ms)
    return {f"{prefix}_mean_ms": statistics.fmean(ordered) if ordered else float("nan"),
            f"{prefix}_p50_ms": percentile(ordered, 0.50), f"{prefix}_p95_ms": percentile(ordered, 0.95),
            f"{prefix}_p99_ms": percentile(ordered, 0.99)}

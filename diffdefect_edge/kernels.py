"""Checked Python front of the compiled ``diffdefect_edge._kernels`` module (CPU and CUDA)."""

from __future__ import annotations

from typing import Any

try:
    from diffdefect_edge import _kernels
except ImportError as exc:  # pragma: no cover - only when the package was not built
    raise ImportError(
        "diffdefect_edge._kernels is not built: install the package with "
        "`pip install -e .` (it compiles csrc/ with CMake)"
    ) from exc


def build_info() -> dict[str, Any]:
    """How the kernels were compiled and what they can use here.

    Keys: ``compiler``, ``openmp_max_threads``, ``simd_compiled``, ``simd_runtime``, ``cuda_compiled``,
    ``cuda_compiler``, ``cuda_architectures``, ``cuda_device_count``, ``cuda_device_usable``,
    ``cuda_device_name``. ``cuda_device_usable`` is true only when a self-test kernel really ran.
    """
    return dict(_kernels.build_info())


def cuda_available() -> bool:
    """True when the CUDA kernels were compiled and a device ran the self-test kernel."""
    info = _kernels.build_info()
    return bool(info["cuda_compiled"] and info["cuda_device_usable"])

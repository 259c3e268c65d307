"""Checked Python front of the compiled ``diffdefect_edge._kernels`` module (CPU and CUDA).

``fft_filter(x, mask)`` computes ``irfft2(rfft2(x) * mask, s=(H, W))`` over the last two axes;
``cross_attention(q, k, v)`` computes ``softmax(q @ k.T * scale) @ v`` with a streaming softmax.

CPU inputs: numpy float32 arrays (other dtypes raise TypeError: nothing is cast silently). Non-contiguous
inputs are accepted and copied once to C order. The CPU kernels release the GIL and use all cores unless
``threads`` (or :func:`set_num_threads`) says otherwise.

CUDA inputs: torch CUDA tensors, or any object exposing ``__cuda_array_interface__`` or DLPack
(``__dlpack__`` with a CUDA ``__dlpack_device__``); for those that are not torch tensors pass ``out=`` as well.
Work is queued on the caller's stream: torch's current stream, the interface's ``stream``, or for DLPack the
legacy default stream, which the producer is asked to synchronise with.
CUDA inputs must be C-contiguous float32; every argument must be on the same device.
"""

from __future__ import annotations

import math
import sys
from typing import Any, NamedTuple

import numpy as np

from diffdefect_edge import _dlpack

try:
    from diffdefect_edge import _kernels
except ImportError as exc:  # pragma: no cover - only when the package was not built
    raise ImportError(
        "diffdefect_edge._kernels is not built: install the package with "
        "`pip install -e .` (it compiles csrc/ with CMake)"
    ) from exc

MAX_HEAD_DIM = 128
_default_threads = 0  # 0: all cores (OpenMP default)


def build_info() -> dict[str, Any]:
    """How the kernels were compiled and what they can use here.

    Keys: ``compiler``, ``openmp_max_threads``, ``simd_compiled``, ``simd_runtime``, ``cpu_kernel_isa``,
    ``cuda_compiled``, ``cuda_compiler``, ``cuda_architectures``, ``cuda_device_count``,
    ``cuda_device_usable``, ``cuda_device_name``. ``cuda_device_usable`` is true only when a self-test
    kernel really ran on the device.
    """
    info = dict(_kernels.build_info())
    info["cpu_kernel_isa"] = _kernels.cpu_isa()
    return info


def cuda_available() -> bool:
    """True when the CUDA kernels were compiled and a device ran the self-test kernel."""
    info = _kernels.build_info()
    return bool(info["cuda_compiled"] and info["cuda_device_usable"])


def set_num_threads(threads: int | None) -> None:
    """Default thread count of the CPU kernels (None or 0: all cores)."""
    global _default_threads
    _default_threads = _check_threads(threads)


def _check_threads(threads: int | None) -> int:
    if threads is None:
        return _default_threads
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
        raise ValueError(f"threads must be a non-negative integer (0 = all cores), got {threads!r}")
    return int(threads)


# ---------------------------------------------------------------------------------------------- CPU


def _cpu_array(a: Any, name: str) -> np.ndarray:
    if a is None:
        raise TypeError(f"{name} must be a float32 array, got None")
    if _is_cuda(a):
        raise ValueError(f"{name} is on a CUDA device but another argument is on the CPU (wrong device)")
    arr = np.asarray(a)
    if arr.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    return np.ascontiguousarray(arr)


def _check_fft_shapes(x_shape: tuple, mask_shape: tuple) -> int:
    """Validate shapes; return the number of mask channels (0 for a shared mask)."""
    if len(x_shape) != 4:
        raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x_shape)}")
    _, c, h, w = x_shape
    if len(mask_shape) == 2 and tuple(mask_shape) == (h, w // 2 + 1):
        return 0
    if len(mask_shape) == 3 and tuple(mask_shape) == (c, h, w // 2 + 1):
        return c
    raise ValueError(f"mask must have shape (H, W//2+1) = {(h, w // 2 + 1)} or (C, H, W//2+1) = "
                     f"{(c, h, w // 2 + 1)} for x of shape {tuple(x_shape)}, got {tuple(mask_shape)}")


def _check_attention_shapes(q: tuple, k: tuple, v: tuple) -> None:
    for name, shape in (("q", q), ("k", k), ("v", v)):
        if len(shape) != 4:
            raise ValueError(f"{name} must have shape (B, heads, L, D), got {tuple(shape)}")
    if q[3] > MAX_HEAD_DIM:
        raise ValueError(f"q: head dim D must be <= {MAX_HEAD_DIM}, got {q[3]}")
    if (k[0], k[1], k[3]) != (q[0], q[1], q[3]):
        raise ValueError(f"k must have shape (B, heads, Lk, D) matching q {tuple(q)}, got {tuple(k)}")
    if tuple(v) != tuple(k):
        raise ValueError(f"v must have the shape of k {tuple(k)}, got {tuple(v)}")


def _scale(scale: float | None, d: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(d)
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return scale


def fft_filter(x: Any, mask: Any, *, threads: int | None = None, out: Any = None) -> Any:
    """``irfft2(rfft2(x) * mask, s=(H, W))`` for x (B, C, H, W) and a real mask (H, W//2+1) or (C, H, W//2+1).

    Returns a new array (numpy on CPU; a tensor like ``x`` on CUDA), or ``out``, written in place: on the CPU a
    writable C-contiguous float32 array of x's shape that shares no memory with x or mask.
    """
    if _is_cuda(x) or _is_cuda(mask):
        return _fft_filter_cuda(x, mask, out)
    x_arr, mask_arr = _cpu_array(x, "x"), _cpu_array(mask, "mask")
    _check_fft_shapes(x_arr.shape, mask_arr.shape)
    return _kernels.fft_filter(x_arr, mask_arr, _check_threads(threads), out)


def cross_attention(q: Any, k: Any, v: Any, scale: float | None = None, *, threads: int | None = None,
                    out: Any = None) -> Any:
    """``softmax(q @ k^T * scale) @ v`` for q (B, heads, Lq, D), k and v (B, heads, Lk, D), D <= 128.

    ``scale`` defaults to 1/sqrt(D). Memory beyond the output does not grow with Lq * Lk. Returns a new array, or
    ``out``, written in place: on the CPU a writable C-contiguous float32 array of q's shape that shares no memory
    with q, k or v.
    """
    if any(_is_cuda(a) for a in (q, k, v)):
        return _cross_attention_cuda(q, k, v, scale, out)
    qa, ka, va = _cpu_array(q, "q"), _cpu_array(k, "k"), _cpu_array(v, "v")
    _check_attention_shapes(qa.shape, ka.shape, va.shape)
    return _kernels.cross_attention(qa, ka, va, _scale(scale, qa.shape[3]), _check_threads(threads), out)


# --------------------------------------------------------------------------------------------- CUDA


class _CudaArg(NamedTuple):
    """A CUDA argument as the kernels see it."""

    pointer: int
    shape: tuple
    stream: int | None  # the stream its protocol names for synchronisation (None: not given)
    keepalive: Any = None  # a DLPack capsule, held until the launch is queued


def _is_cuda(a: Any) -> bool:
    return hasattr(a, "__cuda_array_interface__") or _is_cuda_dlpack(a)


def _is_cuda_dlpack(a: Any) -> bool:
    device = _dlpack.device_of(a)
    return device is not None and device[0] in _dlpack.CUDA_DEVICE_TYPES


def _is_c_contiguous(shape: tuple, strides: tuple) -> bool:
    """Strides in elements; a dimension of size 1 may have any stride."""
    step = 1
    for dim, stride in zip(reversed(shape), reversed(strides)):
        if dim != 1 and stride != step:
            return False
        step *= dim
    return True


def _cuda_view(a: Any, name: str) -> _CudaArg:
    """Pointer, shape and stream of a C-contiguous float32 CUDA array, read from its ``__cuda_array_interface__``
    or, failing that, from a DLPack capsule (asked to be ready for the legacy default stream, which the kernels
    then use: DLPack's stream number 1 is also CUDA's handle ``cudaStreamLegacy``)."""
    if hasattr(a, "__cuda_array_interface__"):
        cai = a.__cuda_array_interface__
        shape = tuple(cai["shape"])
        if cai["typestr"] != "<f4":
            raise TypeError(f"{name} must be float32, got typestr {cai['typestr']!r}")
        byte_strides = cai.get("strides")
        strides = None if byte_strides is None else tuple(st / 4 for st in byte_strides)
        view = _CudaArg(int(cai["data"][0]), shape, cai.get("stream"))
    elif _is_cuda_dlpack(a):
        tensor = _dlpack.export(a, name, _dlpack.LEGACY_DEFAULT_STREAM)
        if not tensor.is_float32:
            raise TypeError(f"{name} must be float32, got DLPack dtype (code, bits, lanes) {tensor.dtype}")
        shape, strides = tensor.shape, tensor.strides
        view = _CudaArg(tensor.pointer, shape, _dlpack.LEGACY_DEFAULT_STREAM, tensor)
    else:
        raise ValueError(f"{name} is on the CPU but another argument is on a CUDA device (wrong device)")
    if 0 in shape:
        raise ValueError(f"{name} is empty (shape {shape})")
    if strides is not None and not _is_c_contiguous(shape, strides):
        raise ValueError(f"{name} must be C-contiguous on CUDA (call .contiguous() first)")
    return view


def _require_cuda() -> None:
    if not hasattr(_kernels, "fft_filter_cuda"):
        raise RuntimeError("diffdefect_edge was built without CUDA kernels (DDE_CUDA=OFF or no nvcc at build time)")


def _stream_and_out(x: Any, stream: int | None, out: Any, like_shape: tuple, name: str) -> tuple[int, Any]:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        stream = torch.cuda.current_stream(x.device).cuda_stream
        if out is None:
            out = x.new_empty(like_shape)
    if out is None:
        raise ValueError(f"out= is required for CUDA arrays that are not torch tensors ({name})")
    return int(stream or 0), out


def _refuse_overlap(out: _CudaArg, inputs: dict[str, _CudaArg]) -> None:
    """Refuse an out whose bytes overlap an input's: the kernels read their inputs after they start writing."""
    lo = out.pointer
    hi = lo + 4 * math.prod(out.shape)
    for name, arg in inputs.items():
        if lo < arg.pointer + 4 * math.prod(arg.shape) and arg.pointer < hi:
            raise ValueError(f"out must not share memory with the inputs ({name})")


def _same_device(ptrs: dict[str, int]) -> None:
    devices = {name: _kernels.cuda_pointer_device(ptr) for name, ptr in ptrs.items()}
    first = next(iter(devices.values()))
    for name, dev in devices.items():
        if dev < 0:
            raise ValueError(f"{name} is not device memory (wrong device)")
        if dev != first:
            raise ValueError(f"{name} is on CUDA device {dev}, others on device {first} (wrong device)")


def _cuda_output(first: Any, out: Any, inputs: dict[str, _CudaArg], kernel: str) -> tuple[int, Any, _CudaArg]:
    """The stream to launch on, and ``out`` (a new tensor like ``first`` when that is a torch tensor and out is
    None) checked against the inputs: the shape of the first, no shared bytes, one device."""
    name, like = next(iter(inputs.items()))
    stream, out = _stream_and_out(first, like.stream, out, like.shape, kernel)
    oa = _cuda_view(out, "out")
    if oa.shape != like.shape:
        raise ValueError(f"out must have the shape of {name} {like.shape}, got {oa.shape}")
    _refuse_overlap(oa, inputs)
    _same_device({**{n: arg.pointer for n, arg in inputs.items()}, "out": oa.pointer})
    return stream, out, oa


def _fft_filter_cuda(x: Any, mask: Any, out: Any) -> Any:
    _require_cuda()
    xa, ma = _cuda_view(x, "x"), _cuda_view(mask, "mask")
    channels = _check_fft_shapes(xa.shape, ma.shape)
    stream, out, oa = _cuda_output(x, out, {"x": xa, "mask": ma}, "fft_filter")
    b, c, h, w = xa.shape
    _kernels.fft_filter_cuda(xa.pointer, ma.pointer, oa.pointer, b * c, channels, h, w, stream)
    return out


def _cross_attention_cuda(q: Any, k: Any, v: Any, scale: float | None, out: Any) -> Any:
    _require_cuda()
    qa, ka, va = _cuda_view(q, "q"), _cuda_view(k, "k"), _cuda_view(v, "v")
    _check_attention_shapes(qa.shape, ka.shape, va.shape)
    stream, out, oa = _cuda_output(q, out, {"q": qa, "k": ka, "v": va}, "cross_attention")
    b, h, lq, d = qa.shape
    _kernels.cross_attention_cuda(qa.pointer, ka.pointer, va.pointer, oa.pointer, b * h, lq, ka.shape[2], d,
                                  _scale(scale, d), stream)
    return out

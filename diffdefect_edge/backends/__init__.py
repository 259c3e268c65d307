"""Runtime backends: one class per runtime behind :class:`Backend`. Each imports its runtime lazily."""

from __future__ import annotations

from diffdefect_edge.backends.base import Backend, BackendError, RawOutput
from diffdefect_edge.package import ModelPackage

BACKENDS = ("openvino", "onnxruntime")
# which package model files each backend reads, and the reverse
FILE_KIND = {"openvino": "openvino", "onnxruntime": "onnx"}
# why there is no torch backend: a torch.export program is a pickle, and the SDK never unpickles (docs/sdk.md)
NO_TORCH = ("the SDK has no torch backend: a torch.export program is a pickle, and nothing in a package is ever "
            "unpickled; on CUDA use backend='onnxruntime' with device='cuda' (onnxruntime-gpu)")
BACKEND_FOR_FILE = {kind: backend for backend, kind in FILE_KIND.items()}


def _backend_class(name: str) -> type[Backend]:
    if name == "openvino":
        from diffdefect_edge.backends.openvino import OpenVINOBackend
        return OpenVINOBackend
    if name == "onnxruntime":
        from diffdefect_edge.backends.onnxruntime import ONNXRuntimeBackend
        return ONNXRuntimeBackend
    if name == "torch":
        raise ValueError(NO_TORCH)
    raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {name!r}")


def resolve_backend(package: ModelPackage, backend: str, device: str, precision: str) -> str:
    """``auto``: ONNX Runtime for device 'cuda', else OpenVINO, else ONNX Runtime."""
    if backend != "auto":
        return backend
    kinds = {(m.backend, m.precision) for m in package.models}
    if device.lower().startswith("cuda"):
        return "onnxruntime"
    if ("openvino", precision) in kinds:
        return "openvino"
    if ("onnx", precision) in kinds:
        return "onnxruntime"
    raise BackendError(f"{package.path}: no OpenVINO or ONNX model in precision {precision!r}")


# compute precisions that run the FP32 file: bf16 arithmetic (OpenVINO on CPUs with AVX-512 BF16 / AMX), or
# "auto": bf16 where the CPU has it, else f32
COMPUTE_PRECISIONS = ("bf16", "auto")


def create_backend(package: ModelPackage, backend: str = "auto", device: str = "CPU", precision: str = "fp32",
                   num_threads: int | None = None, mode: str = "latency", cache_dir: str | None = None) -> Backend:
    file_precision = "fp32" if precision in COMPUTE_PRECISIONS else precision
    name = resolve_backend(package, backend, device, file_precision)
    if name != "openvino" and (precision in COMPUTE_PRECISIONS or cache_dir is not None):
        raise BackendError(f"precision={precision!r} and cache_dir are OpenVINO options; the {name} backend has "
                           "neither")
    cls = _backend_class(name)
    model_file = package.model_file(FILE_KIND[name], file_precision)
    if name == "openvino":
        return cls(package, model_file, device, num_threads, mode, compute=precision, cache_dir=cache_dir)
    return cls(package, model_file, device, num_threads, mode)


__all__ = ["BACKENDS", "BACKEND_FOR_FILE", "FILE_KIND", "Backend", "BackendError", "RawOutput", "create_backend", "resolve_backend"]

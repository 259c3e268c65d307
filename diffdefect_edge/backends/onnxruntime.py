"""ONNX Runtime backend (optional extra ``ort``): CPU, or CUDA/TensorRT providers when that build is installed."""

from __future__ import annotations

import numpy as np

from diffdefect_edge.backends.base import Backend, BackendError, RawOutput, split_outputs
from diffdefect_edge.package import ModelFile, ModelPackage
from diffdefect_edge.threads import thread_budget


class ONNXRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, package: ModelPackage, model_file: ModelFile, device: str = "CPU",
                 num_threads: int | None = None, mode: str = "latency") -> None:
        super().__init__(package, model_file, device, num_threads, mode)
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("the onnxruntime backend needs the 'ort' extra: pip install 'diffdefect-edge[ort]'") \
                from None
        available = ort.get_available_providers()
        if device.lower() == "cuda":
            wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
            if not wanted:
                raise BackendError(f"device 'cuda' needs onnxruntime-gpu (this build has {available})")
            providers = wanted + ["CPUExecutionProvider"]
        elif device.upper() == "CPU":
            providers = ["CPUExecutionProvider"]
        else:
            raise BackendError(f"the onnxruntime backend runs on 'CPU' or 'cuda', not {device!r}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = thread_budget(num_threads)
        graph = package.read_verified(model_file.rel)  # the verified bytes: what runs is exactly what was checked
        try:
            self.session = ort.InferenceSession(graph, options, providers=providers)
        except Exception as exc:  # ONNX Runtime raises its own exception types
            raise BackendError(f"{model_file.rel}: ONNX Runtime could not load it: {exc}") from None
        shape = self.session.get_inputs()[0].shape
        size = package.input_size
        if len(shape) == 4 and all(isinstance(d, int) for d in shape[1:3]) and tuple(shape[1:3]) != (size, size):
            raise BackendError(f"{model_file.rel}: the model takes {shape[1]}x{shape[2]} canvases, the package's "
                               f"input.size says {size}x{size}")
        out = self.session.get_outputs()[0].shape
        classes = len(package.class_names)
        if out and isinstance(out[-1], int) and out[-1] != 4 + classes:
            raise BackendError(f"{model_file.rel}: the model outputs {out[-1] - 4} classes, the package's "
                               f"class_names lists {classes}")
        self._input = self.session.get_inputs()[0].name
        self._has_seg = len(self.session.get_outputs()) > 1

    def infer_prepared(self, tensor: np.ndarray) -> RawOutput:
        return split_outputs(self.session.run(None, {self._input: tensor}), self._has_seg)

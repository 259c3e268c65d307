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
        try:
            self.session = ort.InferenceSession(str(model_file.path), options, providers=providers)
        except Exception as exc:
            raise BackendError(f"{model_file.path}: ONNX Runtime could not load it: {exc}") from None
        self._input = self.session.get_inputs()[0].name
        self._has_seg = len(self.session.get_outputs()) > 1

    def infer_prepared(self, tensor: np.ndarray) -> RawOutput:
        return split_outputs(self.session.run(None, {self._input: tensor}), self._has_seg)

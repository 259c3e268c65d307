"""torch backend: runs the package's ``torch.export`` program on CPU or CUDA. torch is imported only here,
when this backend is created, so the SDK itself never needs it."""

from __future__ import annotations

import threading

import numpy as np

from diffdefect_edge.backends.base import Backend, BackendError, RawOutput
from diffdefect_edge.package import ModelFile, ModelPackage


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, package: ModelPackage, model_file: ModelFile, device: str = "cpu",
                 num_threads: int | None = None, mode: str = "latency") -> None:
        super().__init__(package, model_file, device.lower(), num_threads, mode)
        try:
            import torch
        except ImportError:
            raise BackendError("the torch backend needs PyTorch installed") from None
        self._torch = torch
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise BackendError(f"the torch backend runs on 'cpu' or 'cuda', not {device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError("device 'cuda' asked for, but torch sees no CUDA device")
        if num_threads:
            torch.set_num_threads(int(num_threads))
        try:
            program = torch.export.load(str(model_file.path))
        except Exception as exc:
            raise BackendError(f"{model_file.path}: torch.export could not load it: {exc}") from None
        self.module = program.module().to(self.device)
        self._lock = threading.Lock()  # one forward at a time: the exported module holds no per-call state,
        # but CUDA streams and CPU thread pools are shared; serialising keeps results exact and memory bounded

    def infer_prepared(self, tensor: np.ndarray) -> RawOutput:
        torch = self._torch
        with self._lock, torch.inference_mode():
            out = self.module(torch.from_numpy(tensor).to(self.device))
        if isinstance(out, (tuple, list)):
            return out[0].float().cpu().numpy(), out[1].float().cpu().numpy()
        return out.float().cpu().numpy(), None

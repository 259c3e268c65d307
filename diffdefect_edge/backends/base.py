"""The small interface every runtime backend implements.

A backend takes a batch of letterboxed BGR uint8 canvases (N, S, S, 3) and returns the raw model outputs
``(detections (N, A, 4 + C) float32, segmentation logits or None)``. It converts the canvases to whatever its
model file takes (the package metadata says which), so the Detector never branches on the runtime.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from diffdefect_edge.package import ModelFile, ModelPackage
from diffdefect_edge.preprocess import normalize_nchw

RawOutput = tuple[np.ndarray, "np.ndarray | None"]


class BackendError(RuntimeError):
    pass


class Backend(ABC):
    """One runtime. Subclasses set ``name`` and implement :meth:`infer_prepared`, which must be thread-safe."""

    name: str = ""

    def __init__(self, package: ModelPackage, model_file: ModelFile, device: str, num_threads: int | None,
                 mode: str) -> None:
        self.package, self.model_file, self.device = package, model_file, device
        self.num_threads, self.mode = num_threads, mode
        self._mean, self._std = list(package.meta.input.mean), list(package.meta.input.std)
        self._executor: ThreadPoolExecutor | None = None

    def model_input(self, canvases: np.ndarray) -> np.ndarray:
        """Canvases -> the tensor this backend's file takes (uint8 NHWC as is, or normalised float NCHW)."""
        if self.model_file.spec.dtype == "uint8":
            return canvases
        return normalize_nchw(canvases, self._mean, self._std)

    def infer(self, canvases: np.ndarray) -> RawOutput:
        """Synchronous inference of a batch of canvases."""
        return self.infer_prepared(self.model_input(canvases))

    @abstractmethod
    def infer_prepared(self, tensor: np.ndarray) -> RawOutput:
        """Inference on an already-converted model input (also what the raw-model benchmark times)."""

    @property
    def optimal_requests(self) -> int:
        """How many requests to keep in flight in throughput mode."""
        return 2

    def submit(self, canvases: np.ndarray, callback: Callable[[RawOutput | BaseException, Any], None],
               userdata: Any) -> None:
        """Asynchronous inference: ``callback(result_or_exception, userdata)`` runs when done.

        The default runs :meth:`infer` on a small thread pool; OpenVINO overrides it with AsyncInferQueue.
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.optimal_requests, thread_name_prefix=f"dde-{self.name}")

        def done(fut: Future) -> None:
            exc = fut.exception()
            callback(exc if exc is not None else fut.result(), userdata)

        self._executor.submit(self.infer, canvases).add_done_callback(done)

    def wait_all(self) -> None:
        """Block until every submitted request has finished."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def close(self) -> None:
        self.wait_all()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device, "precision": self.model_file.precision,
                "file": self.model_file.path.name, "mode": self.mode}


def split_outputs(outputs: list[np.ndarray], has_seg: bool) -> RawOutput:
    dets = np.asarray(outputs[0], dtype=np.float32)
    seg = np.asarray(outputs[1], dtype=np.float32) if has_seg and len(outputs) > 1 else None
    return dets, seg

"""OpenVINO backend: CPU, GPU, NPU or AUTO; preprocessing runs inside the graph; AsyncInferQueue for throughput.

The package's IR takes the letterboxed BGR uint8 canvas (cast, channel swap and scaling are embedded in it).
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from diffdefect_edge.backends.base import Backend, BackendError, RawOutput
from diffdefect_edge.package import ModelFile, ModelPackage
from diffdefect_edge.threads import thread_budget

_CORE: ov.Core | None = None
_CORE_LOCK = threading.Lock()


def core() -> ov.Core:
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = ov.Core()
        return _CORE


def available_devices() -> list[str]:
    return list(core().available_devices)


class _Graph:
    """One compiled model with its pool of sync requests and, once used, its AsyncInferQueue."""

    def __init__(self, compiled: ov.CompiledModel, async_requests: int) -> None:
        self.compiled = compiled
        self.has_seg = len(compiled.outputs) > 1
        self._async_requests = async_requests
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._async: ov.AsyncInferQueue | None = None
        self._async_lock = threading.Lock()

    def outputs(self, request: ov.InferRequest) -> RawOutput:
        """Copies of a finished request's outputs (the request's buffers are reused by its next call)."""
        dets = np.array(request.get_output_tensor(0).data, dtype=np.float32)
        seg = np.array(request.get_output_tensor(1).data, dtype=np.float32) if self.has_seg else None
        return dets, seg

    def infer(self, tensor: np.ndarray) -> RawOutput:
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            # share_inputs: OpenVINO reads the caller's array in place instead of copying it first
            request.infer({0: tensor}, share_inputs=True)
            return self.outputs(request)
        finally:
            self._requests.put(request)

    def submit(self, tensor: np.ndarray, callback: Callable[[RawOutput | BaseException, Any], None],
               userdata: Any) -> None:
        with self._async_lock:
            if self._async is None:
                self._async = ov.AsyncInferQueue(self.compiled, self._async_requests)

                def done(request: ov.InferRequest, data: Any) -> None:
                    cb, user = data
                    try:
                        result: RawOutput | BaseException = self.outputs(request)
                    except Exception as exc:  # handed to the caller, never lost in the callback thread
                        result = exc
                    cb(result, user)

                self._async.set_callback(done)
            # the queue copies the input (share_inputs=False): the caller may reuse its array at once
            self._async.start_async({0: tensor}, (callback, userdata))

    def wait_all(self) -> None:
        with self._async_lock:
            if self._async is not None:
                self._async.wait_all()


class OpenVINOBackend(Backend):
    """Each batch size gets its own compiled graph with static shapes (the IR's batch is dynamic): static shapes
    let OpenVINO plan every buffer ahead (docs/perf/), and a camera loop uses one batch size."""

    name = "openvino"
    GRAPHS = 4  # compiled batch sizes kept; the least recently used is dropped

    def __init__(self, package: ModelPackage, model_file: ModelFile, device: str = "CPU",
                 num_threads: int | None = None, mode: str = "latency", compute: str = "fp32",
                 cache_dir: str | None = None) -> None:
        super().__init__(package, model_file, device.upper(), num_threads, mode)
        config: dict[str, Any] = {"PERFORMANCE_HINT": "THROUGHPUT" if mode == "throughput" else "LATENCY"}
        self.compute = "f32"
        if self.device.startswith("CPU"):
            config["INFERENCE_NUM_THREADS"] = thread_budget(num_threads)
            has_bf16 = "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            if compute == "bf16" and not has_bf16:
                raise BackendError("precision='bf16' needs a CPU with bf16 arithmetic (AVX-512 BF16 or AMX); this "
                                   "one has none: use 'fp32' or 'auto'")
            if model_file.precision == "fp32":
                # FP32 asked for runs in f32: OpenVINO would otherwise pick bf16 on CPUs that have it
                self.compute = "bf16" if compute == "bf16" or (compute == "auto" and has_bf16) else "f32"
                config["INFERENCE_PRECISION_HINT"] = self.compute
        if cache_dir is not None:  # compiled graphs kept on disk: a restarted line does not compile again
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(cache_dir)
        self._config = config
        # the IR as verified against the package's checksums, read once: OpenVINO reads it from memory, so what
        # runs is exactly what was checked, whatever happens to the files afterwards
        self._xml = package.read_verified(model_file.rel).decode("utf-8", errors="replace")
        weights = [package.read_verified(rel) for rel in model_file.extra if rel.endswith(".bin")]
        self._weights = ov.Tensor(np.frombuffer(weights[0], np.uint8).copy()) if weights else None
        self._graphs: OrderedDict[int, _Graph] = OrderedDict()
        self._graphs_lock = threading.Lock()
        self.compiled = self.graph(1).compiled  # reads, checks and compiles the IR now

    def _compile(self, model: ov.Model) -> ov.CompiledModel:
        try:
            return core().compile_model(model, self.device, self._config)
        except RuntimeError as exc:
            raise BackendError(f"{self.model_file.rel}: OpenVINO could not compile it for device {self.device!r} "
                               f"(available: {available_devices()}): {exc}") from None

    def _requests_in_flight(self, compiled: ov.CompiledModel) -> int:
        """Twice OpenVINO's optimum in throughput mode, so that a queued request is ready whenever a stream frees
        up while Python decodes (docs/perf/ has the comparison)."""
        optimum = max(2, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        return 2 * optimum if self.mode == "throughput" else optimum

    @property
    def optimal_requests(self) -> int:
        return self._requests_in_flight(self.compiled)

    def graph(self, batch: int) -> _Graph:
        """The compiled graph for batches of this size (built on first use, then kept)."""
        with self._graphs_lock:
            graph = self._graphs.get(batch)
            if graph is not None:
                self._graphs.move_to_end(batch)
                return graph
        compiled = self._compile(self._read(batch))
        graph = _Graph(compiled, self._requests_in_flight(compiled))
        with self._graphs_lock:
            graph = self._graphs.setdefault(batch, graph)
            self._graphs.move_to_end(batch)
            dropped = [self._graphs.popitem(last=False)[1] for _ in range(len(self._graphs) - self.GRAPHS)]
        for old in dropped:
            old.wait_all()
        return graph

    def _read(self, batch: int) -> ov.Model:
        try:
            model = (core().read_model(self._xml, self._weights) if self._weights is not None
                     else core().read_model(self._xml))
        except RuntimeError as exc:  # OpenVINO's whole explanation: the first line alone often says nothing
            raise BackendError(f"{self.model_file.rel}: OpenVINO could not read it: {exc}") from None
        size = self.package.input_size
        shape = model.inputs[0].get_partial_shape()
        if shape.rank.is_static and len(shape) == 4 and all(shape[i].is_static for i in (1, 2)):
            ir_size = (shape[1].get_length(), shape[2].get_length())
            if ir_size != (size, size):
                raise BackendError(f"{self.model_file.rel}: the IR takes {ir_size[0]}x{ir_size[1]} canvases, the "
                                   f"package's input.size says {size}x{size}")
        out = model.outputs[0].get_partial_shape()
        classes = len(self.package.class_names)
        if out.rank.is_static and out[len(out) - 1].is_static and out[len(out) - 1].get_length() != 4 + classes:
            raise BackendError(f"{self.model_file.rel}: the IR outputs {out[len(out) - 1].get_length() - 4} classes, "
                               f"the package's class_names lists {classes}")
        model.reshape({model.inputs[0]: ov.PartialShape([batch, size, size, 3])})
        return model

    def infer_prepared(self, tensor: np.ndarray) -> RawOutput:
        return self.graph(len(tensor)).infer(tensor)

    def submit(self, canvases: np.ndarray, callback: Callable[[RawOutput | BaseException, Any], None],
               userdata: Any) -> None:
        tensor = self.model_input(canvases)
        self.graph(len(tensor)).submit(tensor, callback, userdata)

    def wait_all(self) -> None:
        with self._graphs_lock:
            graphs = list(self._graphs.values())
        for graph in graphs:
            graph.wait_all()

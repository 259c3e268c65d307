"""``Detector``: load a model package, pick a backend, and turn frames into :class:`Detections`.

Per frame: validate -> letterbox (the package's rule) -> backend (which does or embeds the rest of the
preprocessing) -> decode + class-aware NMS -> boxes mapped back to frame pixels.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from diffdefect_edge.backends import Backend, RawOutput, create_backend
from diffdefect_edge.detections import Detections
from diffdefect_edge.latency import latency_stats
from diffdefect_edge.package import ModelPackage, load_package
from diffdefect_edge.postprocess import decode_detections
from diffdefect_edge.preprocess import CanvasWriter, Letterbox, letterbox, to_bgr

PRECISIONS = ("fp32", "fp16", "int8")
MODES = ("latency", "throughput")
# frames per request in throughput mode: a batch amortises the per-request overhead, which throughput mode is
# for (the measured gain against batch 1 is in docs/benchmarks.md)
THROUGHPUT_BATCH = 4


def _check_threshold(name: str, value: float | None) -> float | None:
    if value is not None and not (isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return None if value is None else float(value)


class Detector:
    """A loaded model package, ready to detect defects.

    >>> det = Detector("packages/quickstart")            # OpenVINO on CPU, FP32
    >>> det = Detector(pkg, trusted_keys=["line.pub"])   # refuse a package not signed by that key
    >>> detections = det(frame)                          # BGR uint8 (H, W, 3) or gray
    """

    def __init__(self, package: str | Path | ModelPackage, backend: str = "auto", device: str = "CPU",
                 precision: str = "fp32", conf: float | None = None, iou: float | None = None,
                 mode: str = "latency", num_threads: int | None = None, max_det: int | None = None,
                 trusted_keys: Sequence[str | Path | bytes] | None = None) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
            raise ValueError(f"num_threads must be a positive integer, got {num_threads!r}")
        if isinstance(package, ModelPackage):
            if trusted_keys is not None:  # the signature is checked on the files, not on an object in memory
                package = load_package(package.path, trusted_keys=trusted_keys)
        else:
            package = load_package(package, trusted_keys=trusted_keys)
        self.package = package
        defaults = self.package.meta.defaults
        self.conf = _check_threshold("conf", conf) if conf is not None else defaults.conf
        self.iou = _check_threshold("iou", iou) if iou is not None else defaults.iou
        self.max_det = int(max_det if max_det is not None else defaults.max_det)
        self.mode, self.precision = mode, precision
        self.names = tuple(self.package.class_names)
        self.input_size = self.package.input_size
        self.pad_value = self.package.meta.input.letterbox.pad_value
        self.backend: Backend = create_backend(self.package, backend, device, precision, num_threads, mode)
        self._local = threading.local()  # per-thread canvas reused by __call__

    def __repr__(self) -> str:
        d = self.backend.describe()
        return (f"Detector({self.package.path.name!r}, backend={d['backend']!r}, device={d['device']!r}, "
                f"precision={d['precision']!r}, mode={self.mode!r}, classes={len(self.names)})")

    # ---- steps ----
    def prepare(self, frame: np.ndarray, color: str = "bgr") -> tuple[np.ndarray, Letterbox]:
        """Validate one frame and letterbox it onto a new model canvas."""
        bgr = to_bgr(frame, color)
        return letterbox(bgr, self.input_size, self.pad_value)

    def _prepare_reused(self, frame: np.ndarray, color: str) -> tuple[np.ndarray, Letterbox]:
        """As :meth:`prepare`, into this thread's reused canvas (synchronous calls only: the backend is done with
        its input when the call returns, so the canvas is free again)."""
        bgr = to_bgr(frame, color)
        writer = getattr(self._local, "writer", None)
        if writer is None or writer.shape != bgr.shape:
            writer = self._local.writer = CanvasWriter(bgr.shape, bgr.dtype, self.input_size, self.pad_value)
        return writer.write(bgr), writer.placement

    def postprocess(self, dets: np.ndarray, seg: np.ndarray | None, lb: Letterbox,
                    meta: dict | None = None) -> Detections:
        """One image's raw outputs -> Detections in frame pixels."""
        boxes, scores, class_ids = decode_detections(dets, self.conf, self.iou, max_det=self.max_det)
        xyxy = lb.boxes_to_frame(boxes) if len(boxes) else boxes
        masks = self._instance_masks(seg, lb, xyxy, class_ids) if seg is not None and len(boxes) else None
        return Detections._from_checked(xyxy, scores, class_ids, self.names, masks, meta if meta is not None else {})

    def _instance_masks(self, seg: np.ndarray, lb: Letterbox, xyxy: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
        """Segmentation logits (C + 1, S/8, S/8) -> one mask per box: its class's pixels inside the box."""
        class_map = seg.argmax(0).astype(np.uint8)
        canvas = cv2.resize(class_map, (self.input_size, self.input_size), interpolation=cv2.INTER_NEAREST)
        new_w, new_h = round(lb.frame_width * lb.scale), round(lb.frame_height * lb.scale)
        region = canvas[lb.pad_y:lb.pad_y + max(1, new_h), lb.pad_x:lb.pad_x + max(1, new_w)]
        frame_map = cv2.resize(region, (lb.frame_width, lb.frame_height), interpolation=cv2.INTER_NEAREST)
        masks = np.zeros((len(xyxy), lb.frame_height, lb.frame_width), dtype=bool)
        for i, (box, cid) in enumerate(zip(xyxy, class_ids)):
            x1, y1 = int(np.floor(box[0])), int(np.floor(box[1]))
            x2, y2 = int(np.ceil(box[2])), int(np.ceil(box[3]))
            masks[i, y1:y2, x1:x2] = frame_map[y1:y2, x1:x2] == cid + 1
        return masks

    # ---- calls ----
    def __call__(self, frame: np.ndarray, color: str = "bgr") -> Detections:
        """Detect defects in one frame (BGR uint8 (H, W, 3), or gray; ``color="rgb"`` for RGB input)."""
        start = time.perf_counter()
        canvas, lb = self._prepare_reused(frame, color)
        dets, seg = self.backend.infer(canvas[None])
        out = self.postprocess(dets[0], None if seg is None else seg[0], lb)
        out.meta["latency_ms"] = round((time.perf_counter() - start) * 1e3, 3)
        return out

    def predict_batch(self, frames: Iterable[np.ndarray], color: str = "bgr") -> list[Detections]:
        """Detect in several frames with one batched inference (frames may differ in size)."""
        prepared = [self.prepare(f, color) for f in frames]
        if not prepared:
            return []
        raw: RawOutput = self.backend.infer(np.stack([c for c, _ in prepared]))
        dets, seg = raw
        return [self.postprocess(dets[i], None if seg is None else seg[i], lb) for i, (_, lb) in enumerate(prepared)]

    def stream(self, frames: Iterable[np.ndarray], color: str = "bgr", max_in_flight: int | None = None,
               batch: int | None = None) -> Iterator[tuple[np.ndarray, Detections]]:
        """Yield ``(frame, Detections)`` in input order.

        In latency mode frames run one at a time. In throughput mode up to ``max_in_flight`` requests (default:
        the backend's optimal number) run concurrently (OpenVINO AsyncInferQueue), each on ``batch``
        consecutive frames (default :data:`THROUGHPUT_BATCH`), and results are re-ordered. A batch waits for
        its frames: on a live camera that adds up to ``batch`` frame periods of latency (``batch=1`` avoids it).
        """
        if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        if self.mode == "latency":
            if batch not in (None, 1):
                raise ValueError("batch > 1 needs mode='throughput' (latency mode runs one frame at a time)")
            for frame in frames:
                yield frame, self(frame, color)
            return
        batch = batch or THROUGHPUT_BATCH
        depth = max_in_flight or self.backend.optimal_requests
        done: dict[int, tuple[Any, int, float]] = {}  # frame index -> (request result, row in it, submit time)
        cond = threading.Condition()

        def on_done(result: Any, userdata: tuple[int, int, float]) -> None:
            first, count, started = userdata
            with cond:
                for row in range(count):
                    done[first + row] = (result, row, started)
                cond.notify_all()

        def submit(canvases: list[np.ndarray], first: int) -> None:
            count = len(canvases)
            # a short last batch is padded with its last canvas: one compiled batch size serves the stream
            stacked = np.stack(canvases + [canvases[-1]] * (batch - count))
            self.backend.submit(stacked, on_done, (first, count, time.perf_counter()))

        pending: dict[int, tuple[np.ndarray, Letterbox]] = {}
        chunk: list[np.ndarray] = []
        next_out = 0
        try:
            for index, frame in enumerate(frames):
                canvas, lb = self.prepare(frame, color)
                pending[index] = (frame, lb)
                chunk.append(canvas)
                if len(chunk) == batch:
                    submit(chunk, index + 1 - batch)
                    chunk = []
                # the oldest pending frame is always in a submitted request here (chunk < batch <= pending)
                while len(pending) >= depth * batch or next_out in done:
                    yield self._take(next_out, pending, done, cond)
                    next_out += 1
            if chunk:
                submit(chunk, next_out + len(pending) - len(chunk))
            while pending:
                yield self._take(next_out, pending, done, cond)
                next_out += 1
        finally:
            self.backend.wait_all()

    def _take(self, index: int, pending: dict, done: dict, cond: threading.Condition
              ) -> tuple[np.ndarray, Detections]:
        with cond:
            cond.wait_for(lambda: index in done)
            result, row, started = done.pop(index)
        frame, lb = pending.pop(index)
        if isinstance(result, BaseException):
            raise result
        dets, seg = result
        out = self.postprocess(dets[row], None if seg is None else seg[row], lb)
        out.meta["latency_ms"] = round((time.perf_counter() - started) * 1e3, 3)
        return frame, out

    def warmup(self, runs: int = 2, frame_size: tuple[int, int] = (720, 1280), batch: int | None = None) -> None:
        """Run a few dummy frames so that one-off costs (lazy allocation, kernel selection, compiling the graph of
        the throughput-mode batch size ``batch``) leave the loop."""
        frame = np.full((*frame_size, 3), self.pad_value, dtype=np.uint8)
        for _ in range(runs):
            self(frame)
        if self.mode == "throughput":
            self.predict_batch([frame] * (batch or THROUGHPUT_BATCH))

    def benchmark(self, frame: np.ndarray | None = None, runs: int = 100, warmup: int = 10) -> dict[str, float]:
        """Latency statistics (ms) of the raw model call on the prepared tensor and of the SDK end to end, and the
        frames per second. Latency mode: ``det(frame)`` called ``runs`` times. Throughput mode: a stream of
        ``runs`` frames, each frame's latency from its submission to its result."""
        if frame is None:
            frame = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
        canvas, _ = self.prepare(frame)
        tensor = self.backend.model_input(canvas[None])
        raw = self._timed(lambda: self.backend.infer_prepared(tensor), runs, warmup)
        if self.mode == "throughput":
            self.warmup(runs=1, frame_size=frame.shape[:2])
            start = time.perf_counter()
            end_to_end = [float(d.meta["latency_ms"]) for _, d in self.stream([frame] * runs)]
            fps = runs / (time.perf_counter() - start)
        else:
            end_to_end = self._timed(lambda: self(frame), runs, warmup)
            fps = 1e3 / statistics.fmean(end_to_end)
        return {**latency_stats(raw, "raw"), **latency_stats(end_to_end, "end_to_end"), "fps": fps}

    @staticmethod
    def _timed(fn: Callable[[], object], runs: int, warmup: int) -> list[float]:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return times

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

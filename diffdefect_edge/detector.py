"""``Detector``: load a model package, pick a backend, and turn frames into :class:`Detections`.

Per frame: validate -> camera-health check (a frame outside the bounds is reported, not inspected) ->
letterbox (the package's rule), or tiles for sliced inference -> backend (which does or embeds the rest of the
preprocessing) -> decode (one box per defect by default) + NMS -> boxes mapped back to frame pixels.
"""

from __future__ import annotations

import dataclasses
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from diffdefect_edge.backends import Backend, create_backend
from diffdefect_edge.detections import Detections
from diffdefect_edge.health import FrameHealth, HealthBounds, measure
from diffdefect_edge.latency import latency_stats
from diffdefect_edge.masks import BoxMasks, box_region
from diffdefect_edge.package import ModelPackage, load_package
from diffdefect_edge.postprocess import batched_nms, decode_detections
from diffdefect_edge.preprocess import CanvasWriter, Letterbox, letterbox, to_bgr
from diffdefect_edge.sources import read_image

PRECISIONS = ("fp32", "fp16", "int8", "bf16", "auto")  # bf16 / auto: the FP32 model in bf16 arithmetic
MODES = ("latency", "throughput")
# frames per request in throughput mode: a batch amortises the per-request overhead, which throughput mode is
# for (the measured gain against batch 1 is in docs/benchmarks.md)
THROUGHPUT_BATCH = 4
TILE_BATCH = 8  # tiles per inference request in sliced inference
DEFAULT_HEALTH = HealthBounds()


def _speed(start: float, prepared: float, inferred: float, done: float) -> dict[str, float]:
    return {"preprocess": round((prepared - start) * 1e3, 3), "inference": round((inferred - prepared) * 1e3, 3),
            "postprocess": round((done - inferred) * 1e3, 3)}


def _check_tiling(tile: object, overlap: object) -> tuple[int | None, float]:
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 32):
        raise ValueError(f"tile must be an integer >= 32 (pixels) or None, got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0.0 <= float(overlap) < 0.9:
        raise ValueError(f"tile_overlap must be a number in [0, 0.9), got {overlap!r}")
    return tile, float(overlap)


def _tile_starts(length: int, tile: int, step: int) -> list[int]:
    """Tile origins along one axis: every ``step``, the last one flush with the far border."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def _frame(source: np.ndarray | str | Path, color: str) -> np.ndarray:
    """A frame array or an image file, checked and as BGR."""
    return to_bgr(read_image(source) if isinstance(source, (str, Path)) else source, color)


def _check_unit(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


def _check_max_det(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"max_det must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Options:
    """What one call decodes with: thresholds, the box rule, masks."""

    conf: float
    iou: float
    max_det: int
    masks: bool
    multi_label: bool
    agnostic: bool

    def with_overrides(self, conf: float | None, iou: float | None, max_det: int | None,
                       masks: bool | None) -> Options:
        if conf is None and iou is None and max_det is None and masks is None:
            return self
        return Options(self.conf if conf is None else _check_unit("conf", conf),
                       self.iou if iou is None else _check_unit("iou", iou),
                       self.max_det if max_det is None else _check_max_det(max_det),
                       self.masks if masks is None else bool(masks), self.multi_label, self.agnostic)


class Detector:
    """A loaded model package, ready to detect defects.

    >>> det = Detector("packages/quickstart")            # OpenVINO on CPU, FP32
    >>> det = Detector(pkg, trusted_keys=["line.pub"])   # refuse a package not signed by that key
    >>> detections = det(frame)                          # BGR uint8 (H, W, 3) or gray; or an image path
    >>> many = det([frame, "part.png"], conf=0.5)        # a list in, a list out
    """

    def __init__(self, package: str | Path | ModelPackage, backend: str = "auto", device: str = "CPU",
                 precision: str = "fp32", conf: float | None = None, iou: float | None = None,
                 mode: str = "latency", num_threads: int | None = None, max_det: int | None = None,
                 trusted_keys: Sequence[str | Path | bytes] | None = None, masks: bool | None = None,
                 multi_label: bool = False, agnostic_nms: bool = False,
                 health: HealthBounds | None = DEFAULT_HEALTH, tile: int | None = None,
                 tile_overlap: float = 0.2, cache_dir: str | Path | None = None) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int)
                                        or num_threads < 1):
            raise ValueError(f"num_threads must be a positive integer, got {num_threads!r}")
        if health is not None and not isinstance(health, HealthBounds):
            raise ValueError(f"health must be HealthBounds or None, got {health!r}")
        self.tile, self.tile_overlap = _check_tiling(tile, tile_overlap)
        if isinstance(package, ModelPackage):
            if trusted_keys is not None:  # the signature is checked on the files, not on an object in memory
                package = load_package(package.path, trusted_keys=trusted_keys)
        else:
            package = load_package(package, trusted_keys=trusted_keys)
        self.package = package
        defaults = self.package.meta.defaults
        self.options = Options(defaults.conf, defaults.iou, defaults.max_det, defaults.masks, bool(multi_label),
                               bool(agnostic_nms)).with_overrides(conf, iou, max_det, masks)
        self.mode, self.precision, self.health = mode, precision, health
        calibration = self.package.meta.calibration
        # per-class NG thresholds of a calibrated package (Detections.verdict); an uncalibrated one: any detection
        self.thresholds: dict[str, float] = dict(calibration.thresholds) if calibration is not None else {}
        self.names = tuple(self.package.class_names)
        self.input_size = self.package.input_size
        self.pad_value = self.package.meta.input.letterbox.pad_value
        self.backend: Backend = create_backend(self.package, backend, device, precision, num_threads, mode,
                                               None if cache_dir is None else str(cache_dir))
        self._local = threading.local()  # per-thread canvas reused by __call__

    # the thresholds in use (read-only views of the options)
    conf = property(lambda self: self.options.conf)
    iou = property(lambda self: self.options.iou)
    max_det = property(lambda self: self.options.max_det)

    @property
    def class_names(self) -> list[str]:
        return list(self.names)

    def __repr__(self) -> str:
        d = self.backend.describe()
        return (f"Detector({self.package.path.name!r}, backend={d['backend']!r}, device={d['device']!r}, "
                f"precision={d['precision']!r}, mode={self.mode!r}, classes={len(self.names)})")

    # ---- steps ----
    def prepare(self, frame: np.ndarray, color: str = "bgr") -> tuple[np.ndarray, Letterbox]:
        """Validate one frame and letterbox it onto a new model canvas."""
        bgr = to_bgr(frame, color)
        return letterbox(bgr, self.input_size, self.pad_value)

    def _prepare_reused(self, bgr: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """Letterbox a checked BGR frame into this thread's reused canvas (synchronous calls only: the backend
        is done with its input when the call returns, so the canvas is free again)."""
        writer = getattr(self._local, "writer", None)
        if writer is None or writer.shape != bgr.shape:
            writer = self._local.writer = CanvasWriter(bgr.shape, bgr.dtype, self.input_size, self.pad_value)
        return writer.write(bgr), writer.placement

    def _check_health(self, bgr: np.ndarray) -> FrameHealth | None:
        return measure(bgr, self.health) if self.health is not None else None

    def postprocess(self, dets: np.ndarray, seg: np.ndarray | None, lb: Letterbox,
                    meta: dict | None = None, options: Options | None = None) -> Detections:
        """One image's raw outputs -> Detections in frame pixels."""
        opt = options or self.options
        boxes, scores, class_ids = decode_detections(dets, opt.conf, opt.iou, max_det=opt.max_det,
                                                     multi_label=opt.multi_label, agnostic=opt.agnostic)
        xyxy = lb.boxes_to_frame(boxes) if len(boxes) else boxes
        box_masks = (self._box_masks(seg, lb, boxes, xyxy, class_ids)
                     if opt.masks and seg is not None and len(boxes) else None)
        return Detections._from_checked(xyxy, scores, class_ids, self.names, box_masks,
                                        meta if meta is not None else {}, self.thresholds)

    def _box_masks(self, seg: np.ndarray, lb: Letterbox, canvas_boxes: np.ndarray, xyxy: np.ndarray,
                   class_ids: np.ndarray) -> BoxMasks:
        """Segmentation logits (C + 1, S/8, S/8) -> per box, its class's pixels inside the box at canvas
        resolution: nothing frame-sized is made here."""
        class_map = cv2.resize(seg.argmax(0).astype(np.uint8), (self.input_size, self.input_size),
                               interpolation=cv2.INTER_NEAREST)
        crops = []
        for box, cid in zip(canvas_boxes, class_ids):
            x1, y1, x2, y2 = box_region(box, self.input_size, self.input_size)
            crops.append(class_map[y1:y2, x1:x2] == cid + 1)
        return BoxMasks(tuple(crops), xyxy, (lb.frame_height, lb.frame_width))

    # ---- calls ----
    def __call__(self, source: np.ndarray | str | Path | Sequence[np.ndarray | str | Path], color: str = "bgr", *,
                 conf: float | None = None, iou: float | None = None, max_det: int | None = None,
                 masks: bool | None = None, tile: int | None = None) -> Detections | list[Detections]:
        """Detect defects in a frame (BGR uint8 (H, W, 3), gray, BGRA; ``color="rgb"`` for RGB input) or an
        image file; a list of frames or files gives a list of Detections. Keyword arguments override the
        detector's settings for this call; ``tile`` slices a large frame into tiles of that size."""
        options = self.options.with_overrides(conf, iou, max_det, masks)
        if isinstance(source, (list, tuple)):
            return self.predict_batch(source, color, options=options, tile=tile)
        start = time.perf_counter()
        bgr = _frame(source, color)
        health = self._check_health(bgr)
        if health is not None and not health.ok:
            return self._unhealthy(health, bgr.shape, start)
        tile_size = tile if tile is not None else self.tile
        if tile_size is not None and max(bgr.shape[:2]) > tile_size:
            out = self._sliced(bgr, _check_tiling(tile_size, self.tile_overlap)[0], options, start)
        else:
            canvas, lb = self._prepare_reused(bgr)
            t_prep = time.perf_counter()
            dets, seg = self.backend.infer(canvas[None])
            t_infer = time.perf_counter()
            out = self.postprocess(dets[0], None if seg is None else seg[0], lb, options=options)
            out.speed = _speed(start, t_prep, t_infer, time.perf_counter())
        if health is not None:
            out.meta["health"] = health.to_dict()
        out.meta["latency_ms"] = round((time.perf_counter() - start) * 1e3, 3)
        return out

    def _unhealthy(self, health: FrameHealth, shape: tuple[int, ...], start: float) -> Detections:
        """The result for a frame outside the health bounds: not inspected, no boxes, the problems said."""
        out = Detections.empty(self.names, {"health": health.to_dict(), "inspected": False,
                                            "frame_size": [int(shape[1]), int(shape[0])]})
        now = time.perf_counter()
        out.speed = _speed(start, now, now, now)
        out.meta["latency_ms"] = round((now - start) * 1e3, 3)
        return out

    def _sliced(self, bgr: np.ndarray, tile: int, options: Options, start: float) -> Detections:
        """Tiles of ``tile`` px overlapping by ``tile_overlap``, plus the whole frame letterboxed; boxes mapped
        back and merged across tile borders by NMS."""
        h, w = bgr.shape[:2]
        step = max(1, int(tile * (1.0 - self.tile_overlap)))
        origins = [(x, y) for y in _tile_starts(h, tile, step) for x in _tile_starts(w, tile, step)]
        views = [bgr[y:y + tile, x:x + tile] for x, y in origins] + [bgr]
        offsets = origins + [(0, 0)]
        prepared = [letterbox(np.ascontiguousarray(v), self.input_size, self.pad_value) for v in views]
        t_prep = time.perf_counter()
        all_boxes, all_scores, all_ids = [], [], []
        no_masks = dataclasses.replace(options, masks=False)  # tiles carry no masks
        for first in range(0, len(prepared), TILE_BATCH):
            part = prepared[first:first + TILE_BATCH]
            dets, _ = self.backend.infer(np.stack([c for c, _ in part]))
            for row, (_, lb) in enumerate(part):
                d = self.postprocess(dets[row], None, lb, options=no_masks)
                x, y = offsets[first + row]
                all_boxes.append(d.xyxy + np.array([x, y, x, y], np.float32))
                all_scores.append(d.scores)
                all_ids.append(d.class_ids)
        t_infer = time.perf_counter()
        boxes, scores, ids = np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_ids)
        keep = batched_nms(boxes, scores, np.zeros_like(ids) if options.agnostic else ids, options.iou)
        keep = keep[:options.max_det]
        out = Detections._from_checked(boxes[keep], scores[keep], ids[keep], self.names, None,
                                       {"tiles": len(origins), "tile": tile}, self.thresholds)
        out.speed = _speed(start, t_prep, t_infer, time.perf_counter())
        return out

    def predict_batch(self, frames: Iterable[np.ndarray | str | Path], color: str = "bgr",
                      options: Options | None = None, tile: int | None = None) -> list[Detections]:
        """Detect in several frames (or image files) with one batched inference (frames may differ in size)."""
        options = options or self.options
        items = list(frames)
        if tile is not None or self.tile is not None:
            return [self(f, color, conf=options.conf, iou=options.iou, max_det=options.max_det,
                         masks=options.masks, tile=tile) for f in items]
        start = time.perf_counter()
        bgrs = [_frame(f, color) for f in items]
        if not bgrs:
            return []
        healths = [self._check_health(b) for b in bgrs]
        # frames that failed the health check are not inferred at all; the others go in one batch
        rows = {i: r for r, i in enumerate(i for i, h in enumerate(healths) if h is None or h.ok)}
        prepared = {i: letterbox(bgrs[i], self.input_size, self.pad_value) for i in rows}
        t_prep = time.perf_counter()
        if rows:
            dets, seg = self.backend.infer(np.stack([prepared[i][0] for i in rows]))
        t_infer = time.perf_counter()
        out = []
        for i, health in enumerate(healths):
            if i not in rows:
                out.append(self._unhealthy(health, bgrs[i].shape, start))
                continue
            row = rows[i]
            d = self.postprocess(dets[row], None if seg is None else seg[row], prepared[i][1], options=options)
            if health is not None:
                d.meta["health"] = health.to_dict()
            out.append(d)
        end = time.perf_counter()
        for d in out:  # the batch's time, shared evenly
            if not d.speed:
                d.speed = {k: round(v / len(out), 3) for k, v in _speed(start, t_prep, t_infer, end).items()}
        return out

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

        pending: dict[int, tuple[np.ndarray, Letterbox, FrameHealth | None]] = {}
        chunk: list[np.ndarray] = []
        next_out = 0
        try:
            for index, frame in enumerate(frames):
                bgr = to_bgr(frame, color)
                canvas, lb = letterbox(bgr, self.input_size, self.pad_value)
                pending[index] = (frame, lb, self._check_health(bgr))
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
        frame, lb, health = pending.pop(index)
        if isinstance(result, BaseException):
            raise result
        if health is not None and not health.ok:
            return frame, self._unhealthy(health, (lb.frame_height, lb.frame_width), started)
        dets, seg = result
        out = self.postprocess(dets[row], None if seg is None else seg[row], lb)
        if health is not None:
            out.meta["health"] = health.to_dict()
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
        frames per second, on ``frame`` (default: the package's sample image, a real frame). Latency mode: ``det(frame)`` called ``runs`` times. Throughput mode: a stream of
        ``runs`` frames, each frame's latency from its submission to its result."""
        if frame is None:
            frame = self.sample_frame()
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

    def sample_frame(self) -> np.ndarray:
        """The package's sample image (a real frame of its training data), or a mid-gray 1280x720 frame when the
        package has none."""
        rel = self.package.meta.sample_image
        if rel is not None:
            data = self.package.read_verified(rel)
            frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if frame is not None:
                return frame
        return np.full((720, 1280, 3), 128, np.uint8)

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

"""The camera loop: frames from a source -> Detector -> overlay, video, JSON lines, inspection log, crops.

``run_loop`` is what ``diffdefect-edge run`` calls; a line integrator can call it too, or copy
``examples/camera_loop.py`` for a loop of their own. It stops when the source ends, after ``max_frames``, or
when ``stop`` is set (the command sets it on SIGINT/SIGTERM), and always closes what it opened.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from diffdefect_edge.detections import Detections
from diffdefect_edge.detector import Detector
from diffdefect_edge.inspection_log import InspectionLog
from diffdefect_edge.latency import percentile
from diffdefect_edge.sources import FileSource, LiveSource

WINDOW = "diffdefect-edge"


@dataclass
class LoopOutputs:
    """Where the loop writes. Every field is optional; files are refused if they exist unless ``overwrite``."""

    save: Path | None = None  # annotated video (.mp4 / .avi)
    jsonl: Path | None = None  # one JSON line per frame
    db: Path | None = None  # SQLite inspection log (appends; one run row per call)
    crops: Path | None = None  # one image per detected defect
    show: bool = False  # an OpenCV window (needs opencv-python, not the headless wheel)
    overwrite: bool = False


@dataclass
class LoopSummary:
    frames: int
    seconds: float
    fps: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    frames_with_defects: int
    defects: int
    dropped: int
    reconnects: int
    unreadable: int
    stopped_by: str  # "end of source", "max frames", "signal", "window closed"

    def to_text(self) -> str:
        return (f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} fps); latency p50 "
                f"{self.latency_p50_ms:.2f} ms, p95 {self.latency_p95_ms:.2f} ms, p99 {self.latency_p99_ms:.2f} ms; "
                f"{self.frames_with_defects} frames with defects ({self.defects} defects); dropped {self.dropped}, "
                f"reconnects {self.reconnects}, unreadable {self.unreadable}; stopped: {self.stopped_by}")


def draw_overlay(frame: np.ndarray, detections: Detections, fps: float, latency_ms: float) -> np.ndarray:
    """Boxes and labels plus a status line (fps, latency, defect count) in the top-left corner."""
    canvas = detections.draw(frame)
    text = f"{fps:5.1f} fps  {latency_ms:6.2f} ms  defects: {len(detections)}"
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    cv2.rectangle(canvas, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
    cv2.putText(canvas, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def save_crops(frame: np.ndarray, detections: Detections, folder: Path, prefix: str, margin: int = 4) -> list[str]:
    """One PNG per detection (box plus ``margin`` pixels), named prefix_k_class.png; returns the paths."""
    h, w = frame.shape[:2]
    paths = []
    for k, (box, _, _, name) in enumerate(detections):
        x1, y1 = max(0, int(box[0]) - margin), max(0, int(box[1]) - margin)
        x2, y2 = min(w, int(np.ceil(box[2])) + margin), min(h, int(np.ceil(box[3])) + margin)
        path = folder / f"{prefix}_{k}_{name}.png"
        if x2 > x1 and y2 > y1 and cv2.imwrite(str(path), frame[y1:y2, x1:x2]):
            paths.append(str(path))
        else:
            paths.append("")
    return paths


def _paced(frames: Iterator[np.ndarray], max_fps: float | None, stop: threading.Event, max_frames: int | None,
           timestamps: list[float]) -> Iterator[np.ndarray]:
    """Frames until stop/max_frames, at most ``max_fps`` per second; records each frame's grab time."""
    period = 1.0 / max_fps if max_fps else 0.0
    next_due = time.perf_counter()
    for index, frame in enumerate(frames):
        if stop.is_set() or (max_frames is not None and index >= max_frames):
            return
        if period:
            delay = next_due - time.perf_counter()
            if delay > 0 and stop.wait(delay):
                return
            next_due = max(next_due + period, time.perf_counter() - period)
        timestamps.append(time.time())
        yield frame


class _Writers:
    """Opens the requested outputs up front (so a bad path fails before any frame) and closes them all."""

    def __init__(self, outputs: LoopOutputs, detector: Detector, source_name: str) -> None:
        self.outputs = outputs
        for flag, path in (("--save", outputs.save), ("--jsonl", outputs.jsonl)):
            if path is not None and path.exists() and not outputs.overwrite:
                raise FileExistsError(f"{flag} {path}: exists; pass --overwrite to replace it")
        self.video: cv2.VideoWriter | None = None
        self.jsonl: IO[str] | None = None
        self.log: InspectionLog | None = None
        try:
            if outputs.jsonl is not None:
                outputs.jsonl.parent.mkdir(parents=True, exist_ok=True)
                self.jsonl = outputs.jsonl.open("w")
            if outputs.db is not None:
                self.log = InspectionLog(outputs.db, source_name, detector.package.path.name,
                                         detector.backend.describe()["backend"])
            if outputs.crops is not None:
                outputs.crops.mkdir(parents=True, exist_ok=True)
            if outputs.show:
                try:
                    cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
                except cv2.error:
                    raise RuntimeError("--show needs an OpenCV build with GUI support: pip install opencv-python "
                                       "(this environment has opencv-python-headless)") from None
        except BaseException:
            self.close()
            raise

    def write_video(self, frame: np.ndarray, fps: float) -> None:
        path = self.outputs.save
        if path is None:
            return
        if self.video is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
            self.video = cv2.VideoWriter(str(path), fourcc, fps, (frame.shape[1], frame.shape[0]))
            if not self.video.isOpened():
                raise RuntimeError(f"--save {path}: OpenCV cannot write this video (use .mp4 or .avi)")
        self.video.write(frame)

    def close(self) -> None:
        if self.video is not None:
            self.video.release()
        if self.jsonl is not None:
            self.jsonl.close()
        if self.log is not None:
            self.log.close()
        if self.outputs.show:
            try:
                cv2.destroyWindow(WINDOW)
            except cv2.error:
                pass


def run_loop(detector: Detector, source: FileSource | LiveSource, outputs: LoopOutputs | None = None,
             max_frames: int | None = None, max_fps: float | None = None, stop: threading.Event | None = None,
             on_result: Callable[[int, np.ndarray, Detections], None] | None = None,
             source_name: str | None = None, batch: int | None = None) -> LoopSummary:
    """Run the detector over a source until it ends, ``max_frames`` frames, or ``stop`` is set.

    ``max_fps`` paces a file source at a camera's rate. ``on_result(index, frame, detections)`` is called for
    every frame (e.g. to signal a reject gate). In throughput mode several frames are in flight at once, in
    requests of ``batch`` frames (see :meth:`Detector.stream`), and results still arrive in frame order.
    """
    outputs = outputs or LoopOutputs()
    stop = stop or threading.Event()
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be a positive integer, got {max_frames!r}")
    if max_fps is not None and max_fps <= 0:
        raise ValueError(f"max_fps must be positive, got {max_fps!r}")
    name = source_name or str(source.source)
    writers = _Writers(outputs, detector, name)
    latencies: list[float] = []
    timestamps: list[float] = []
    frames_with_defects = defects = 0
    fps_ema, stopped_by = 0.0, "end of source"
    try:
        detector.warmup(batch=batch)
        start = last = time.perf_counter()
        frames = _paced(iter(source), max_fps, stop, max_frames, timestamps)
        for index, (frame, dets) in enumerate(detector.stream(frames, batch=batch)):
            now = time.perf_counter()
            fps_ema = 1.0 / max(now - last, 1e-6) if index == 0 else 0.9 * fps_ema + 0.1 / max(now - last, 1e-6)
            last = now
            latency = float(dets.meta.get("latency_ms", 0.0))
            latencies.append(latency)
            if len(dets):
                frames_with_defects += 1
                defects += len(dets)
            crop_paths = (save_crops(frame, dets, outputs.crops, f"run{writers.log.run_id if writers.log else 0}"
                                     f"_frame{index:07d}") if outputs.crops is not None and len(dets) else None)
            if writers.jsonl is not None:
                record = {"frame": index, "timestamp": round(timestamps[index], 6), "latency_ms": latency,
                          "detections": dets.to_dict()["detections"]}
                writers.jsonl.write(json.dumps(record) + "\n")
                writers.jsonl.flush()
            if writers.log is not None:
                writers.log.record(index, timestamps[index], dets, crop_paths)
            if on_result is not None:
                on_result(index, frame, dets)
            if outputs.save is not None or outputs.show:
                drawn = draw_overlay(frame, dets, fps_ema, latency)
                writers.write_video(drawn, max_fps or source.fps or 25.0)
                if outputs.show:
                    cv2.imshow(WINDOW, drawn)
                    if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                        stop.set()
                        stopped_by = "window closed"
        if stopped_by == "end of source":
            if stop.is_set():
                stopped_by = "signal"
            elif max_frames is not None and len(latencies) >= max_frames:
                stopped_by = "max frames"
    finally:
        writers.close()
    seconds = time.perf_counter() - start
    latencies.sort()
    return LoopSummary(frames=len(latencies), seconds=seconds, fps=len(latencies) / seconds if seconds else 0.0,
                       latency_p50_ms=percentile(latencies, 0.50), latency_p95_ms=percentile(latencies, 0.95),
                       latency_p99_ms=percentile(latencies, 0.99), frames_with_defects=frames_with_defects,
                       defects=defects, dropped=source.stats.dropped, reconnects=source.stats.reconnects,
                       unreadable=source.stats.failures, stopped_by=stopped_by)


def summary_dict(summary: LoopSummary) -> dict:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(summary).items()}

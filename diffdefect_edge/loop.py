"""The camera loop: frames from a source -> Detector -> overlay, video, JSON lines, inspection log, crops.

``run_loop`` is what ``diffdefect-edge run`` calls; a line integrator can call it too, or copy
``examples/camera_loop.py`` for a loop of their own. It stops when the source ends, after ``max_frames``, or
when ``stop`` is set (the command sets it on SIGINT/SIGTERM), and always closes what it opened.
"""

from __future__ import annotations

import json
import math
import os
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
    db: Path | None = None  # SQLite inspection log (one run row per call)
    crops: Path | None = None  # one image per detected defect
    show: bool = False  # an OpenCV window (needs opencv-python, not the headless wheel)
    overwrite: bool = False  # replace existing --save / --jsonl / --db
    resume: bool = False  # append to an existing --jsonl and --db under a new run id (after a crash)


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
    unhealthy: int = 0  # frames outside the camera-health bounds: flagged, not inspected
    run_id: int = 0
    ok: int = 0  # verdicts
    ng: int = 0

    def to_text(self) -> str:
        return (f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} fps); latency p50 "
                f"{self.latency_p50_ms:.2f} ms, p95 {self.latency_p95_ms:.2f} ms, p99 {self.latency_p99_ms:.2f} ms; "
                f"{self.frames_with_defects} frames with defects ({self.defects} defects); dropped {self.dropped}, "
                f"reconnects {self.reconnects}, unreadable {self.unreadable}, unhealthy {self.unhealthy}; "
                f"verdicts OK {self.ok}, NG {self.ng}; stopped: {self.stopped_by}")


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
           timestamps: list[float], identities: list[dict], source: FileSource | LiveSource) -> Iterator[np.ndarray]:
    """Frames until stop/max_frames, at most ``max_fps`` per second; records each frame's grab time and where it
    came from (read here, as each frame is taken: throughput mode reads ahead of the results)."""
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
        identities.append(dict(source.identity))
        yield frame


def _next_jsonl_run(outputs: LoopOutputs) -> int:
    """One more than the highest run id in an existing JSONL being resumed (1 for a new one)."""
    if not outputs.resume or outputs.jsonl is None or not outputs.jsonl.is_file():
        return 1
    last = 0
    with outputs.jsonl.open() as f:
        for line in f:
            try:
                last = max(last, int(json.loads(line).get("run_id", 0)))
            except (ValueError, AttributeError, TypeError):  # a line cut by the crash: skipped
                continue
    return last + 1


class _Writers:
    """Opens the requested outputs up front (so a bad path fails before any frame) and closes them all."""

    def __init__(self, outputs: LoopOutputs, detector: Detector, source_name: str) -> None:
        self.outputs = outputs
        if outputs.overwrite and outputs.resume:
            raise ValueError("--overwrite and --resume exclude each other: replace the logs, or append to them")
        # the inspection log always appends (a run row per call); the JSONL appends with --resume; a video cannot
        for flag, path in (("--save", outputs.save), ("--jsonl", outputs.jsonl)):
            if path is None or not path.exists() or outputs.overwrite or (flag == "--jsonl" and outputs.resume):
                continue
            if outputs.resume:
                raise FileExistsError(f"--save {path}: exists, and a video cannot be continued; give the resumed "
                                      "run a new --save path")
            raise FileExistsError(f"{flag} {path}: exists; pass --resume to append to it (after a crash) or "
                                  "--overwrite to replace it")
        if outputs.overwrite and outputs.db is not None and outputs.db.is_file():
            for suffix in ("", "-wal", "-shm"):  # the JSONL is replaced too: the two logs never disagree
                Path(str(outputs.db) + suffix).unlink(missing_ok=True)
        self.video: cv2.VideoWriter | None = None
        self.jsonl: IO[str] | None = None
        self.log: InspectionLog | None = None
        try:
            if outputs.db is not None:
                self.log = InspectionLog(outputs.db, source_name, detector.package.path.name,
                                         detector.backend.describe()["backend"])
            # one run id in both logs: the database's run row, else one past the last run in the JSONL
            self.run_id = self.log.run_id if self.log is not None else _next_jsonl_run(outputs)
            if outputs.jsonl is not None:
                outputs.jsonl.parent.mkdir(parents=True, exist_ok=True)
                self.jsonl = outputs.jsonl.open("a" if outputs.resume else "w")
                if outputs.resume and self.jsonl.tell() > 0:
                    with outputs.jsonl.open("rb") as f:
                        f.seek(-1, os.SEEK_END)
                        cut = f.read(1) != b"\n"
                    if cut:  # the crash cut the last line: the next record starts on a line of its own
                        self.jsonl.write("\n")
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
    identities: list[dict] = []
    frames_with_defects = defects = unhealthy = ok = ng = 0
    fps_ema, stopped_by = 0.0, "end of source"
    try:
        detector.warmup(batch=batch)
        start = last = time.perf_counter()
        frames = _paced(iter(source), max_fps, stop, max_frames, timestamps, identities, source)
        for index, (frame, dets) in enumerate(detector.stream(frames, batch=batch)):
            now = time.perf_counter()
            fps_ema = 1.0 / max(now - last, 1e-6) if index == 0 else 0.9 * fps_ema + 0.1 / max(now - last, 1e-6)
            last = now
            latency = float(dets.meta.get("latency_ms", 0.0))
            latencies.append(latency)
            inspected = dets.meta.get("inspected", True)
            unhealthy += not inspected
            verdict = dets.verdict
            ok += verdict.status == "OK"
            ng += verdict.status == "NG"
            if len(dets):
                frames_with_defects += 1
                defects += len(dets)
            crop_paths = (save_crops(frame, dets, outputs.crops, f"run{writers.run_id}_frame{index:07d}")
                          if outputs.crops is not None and len(dets) else None)
            if writers.jsonl is not None:
                record = {"run_id": writers.run_id, "frame": index, "timestamp": round(timestamps[index], 6),
                          "source": identities[index], "latency_ms": latency, "inspected": inspected,
                          "verdict": verdict.to_dict(), "detections": dets.to_dict()["detections"]}
                if "health" in dets.meta:
                    record["health"] = dets.meta["health"]
                writers.jsonl.write(json.dumps(record, allow_nan=False) + "\n")
                writers.jsonl.flush()
            if writers.log is not None:
                writers.log.record(index, timestamps[index], dets, crop_paths, identities[index])
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
                       unreadable=source.stats.failures, stopped_by=stopped_by, unhealthy=unhealthy,
                       run_id=writers.run_id, ok=ok, ng=ng)


def summary_dict(summary: LoopSummary) -> dict:
    """The summary as strict JSON values (a latency of a run with no frame is None, not NaN)."""
    return {k: ((round(v, 3) if math.isfinite(v) else None) if isinstance(v, float) else v)
            for k, v in asdict(summary).items()}

"""Frame sources: camera index, video file, folder or glob of images, RTSP/HTTP URL.

Files (video, folder, glob) are read in order with nothing dropped. Live sources (camera, URL) grab in a
background thread and hand out the latest frame: frames not taken in time are dropped and counted, and a
source that fails is reopened with exponential backoff while the consumer keeps waiting.
"""

from __future__ import annotations

import glob as globlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class SourceError(ValueError):
    pass


@dataclass
class SourceStats:
    frames: int = 0
    dropped: int = 0
    reconnects: int = 0
    failures: int = 0  # images that could not be read or were truncated (skipped, logged)


def _truncated_jpeg(data: bytes) -> bool:
    """A JPEG whose end-of-image marker is missing (a partial write or transfer): libjpeg would decode it with
    grey rows and only a warning on stderr."""
    return data[:2] == b"\xff\xd8" and not data.rstrip(b"\0").endswith(b"\xff\xd9")


def read_image_file(path: Path) -> tuple[np.ndarray | None, str]:
    """(BGR frame, "") or (None, why it cannot be used)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"unreadable ({exc.strerror})"
    if _truncated_jpeg(data):
        return None, "truncated JPEG (no end-of-image marker)"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    return (image, "") if image is not None else (None, "could not be decoded")


def read_image(path: str | Path) -> np.ndarray:
    """An image file as a BGR uint8 frame; ValueError naming the file and why when it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such image file (expected a frame array or the path of an image)")
    image, problem = read_image_file(path)
    if image is None:
        raise ValueError(f"{path}: {problem} (expected a PNG, JPEG, BMP or TIFF file)")
    return image


class FileSource:
    """Images of a folder or glob (sorted by name), or the frames of a video file, in order."""

    live = False

    def __init__(self, source: str | Path) -> None:
        self.source = str(source)
        self.stats = SourceStats()
        self.identity: dict = {}  # where the frame last yielded came from (its file, or its video frame index)
        self.fps: float | None = None  # a video's frame rate, None for images
        path = Path(self.source)
        if any(ch in self.source for ch in "*?["):
            self._images = sorted(Path(p) for p in globlib.glob(self.source) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
            if not self._images:
                raise SourceError(f"{self.source}: the pattern matches no image")
            self._video = None
        elif path.is_dir():
            self._images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._images:
                raise SourceError(f"{self.source}: the folder holds no image ({', '.join(sorted(IMAGE_SUFFIXES))})")
            self._video = None
        elif path.is_file():
            self._images = None
            self._video = path
            cap = cv2.VideoCapture(str(path))
            ok = cap.isOpened()
            self.fps = (float(cap.get(cv2.CAP_PROP_FPS)) or None) if ok else None
            cap.release()
            if not ok:
                raise SourceError(f"{self.source}: OpenCV cannot open this file as a video")
        else:
            raise SourceError(f"{self.source}: no such file, folder or pattern")

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._images is not None:
            for number, p in enumerate(self._images):
                image, problem = read_image_file(p)
                if image is None:
                    self.stats.failures += 1
                    log.warning("%s: %s, skipped", p, problem)
                    continue
                self.stats.frames += 1
                self.identity = {"path": str(p), "file_index": number}
                yield image
            return
        cap = cv2.VideoCapture(str(self._video))
        try:
            number = 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                self.stats.frames += 1
                self.identity = {"path": str(self._video), "video_frame": number,
                                 "video_ms": round(float(cap.get(cv2.CAP_PROP_POS_MSEC)), 3)}
                number += 1
                yield frame
        finally:
            cap.release()

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


class LiveSource:
    """Latest-frame grabber over a capture that may fail: reconnects with backoff, counts drops.

    ``open_capture`` returns an object with ``read() -> (ok, frame)``, ``isOpened()`` and ``release()``
    (cv2.VideoCapture by default). Iteration ends after ``close()`` or, when ``max_reconnects`` is set,
    once the source has failed that many times in a row.
    """

    live = True
    fps: float | None = None

    def __init__(self, source: str | int, open_capture: Callable[[], object] | None = None,
                 backoff: tuple[float, float] = (0.5, 10.0), max_reconnects: int | None = None) -> None:
        self.source = source
        self.stats = SourceStats()
        self._open = open_capture or (lambda: cv2.VideoCapture(source))
        self._backoff = backoff
        self._max_reconnects = max_reconnects
        self._cond = threading.Condition()
        self._latest: np.ndarray | None = None
        self._latest_identity: dict = {}
        self.identity: dict = {}  # the frame last yielded: its grab number and grab time
        self._grabbed = 0
        self._fresh = False
        self._stopped = False
        self._wake = threading.Event()  # set by stop(): a reconnect backoff ends at once
        self._thread = threading.Thread(target=self._grab_loop, name=f"dde-grab-{source}", daemon=True)
        self._thread.start()

    def _grab_loop(self) -> None:
        try:
            self._grab_until_stopped()
        finally:  # whatever happens in here, the consumer must not wait forever
            with self._cond:
                self._stopped = True
                self._cond.notify_all()

    def _grab_until_stopped(self) -> None:
        delay, failures_in_row = self._backoff[0], 0
        while not self._stopped:
            try:
                cap = self._open()
                opened = bool(cap.isOpened())
            except Exception as exc:  # a driver or network error is a failed open, not the end of the loop
                log.warning("%s: open failed: %s", self.source, exc)
                cap, opened = None, False
            if not opened:
                if cap is not None:
                    cap.release()
                failures_in_row += 1
            else:
                while not self._stopped:
                    try:
                        ok, frame = cap.read()
                    except Exception as exc:
                        log.warning("%s: read failed: %s", self.source, exc)
                        ok, frame = False, None
                    if not ok or frame is None:
                        failures_in_row += 1
                        break
                    failures_in_row, delay = 0, self._backoff[0]
                    with self._cond:
                        if self._fresh:
                            self.stats.dropped += 1  # the consumer did not take the previous one in time
                        self._latest, self._fresh = frame, True
                        self._latest_identity = {"source": str(self.source), "grab_index": self._grabbed,
                                                 "grabbed_at": round(time.time(), 6)}
                        self._grabbed += 1
                        self._cond.notify_all()
                cap.release()
            if self._stopped:
                break
            if self._max_reconnects is not None and failures_in_row > self._max_reconnects:
                log.error("%s: failed %d times in a row, giving up", self.source, failures_in_row)
                with self._cond:
                    self._stopped = True
                    self._cond.notify_all()
                break
            self.stats.reconnects += 1
            log.warning("%s: source failed, reconnecting in %.1f s", self.source, delay)
            self._wake.wait(delay)
            delay = min(delay * 2, self._backoff[1])

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._fresh or self._stopped)
                if not self._fresh:
                    return
                frame, self._fresh = self._latest, False
                self.identity = self._latest_identity
            self.stats.frames += 1
            yield frame

    def stop(self) -> None:
        """Ask the grabber to stop and wake the consumer; returns at once (safe from a signal handler)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._wake.set()

    def close(self) -> None:
        self.stop()
        self._thread.join(timeout=5)


def open_source(source: str | int | Path) -> FileSource | LiveSource:
    """Camera index (int or digits), URL (rtsp://, http://, ...), video file, folder or glob of images."""
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return LiveSource(int(source))
    if isinstance(source, str) and "://" in source:
        return LiveSource(source)
    return FileSource(source)

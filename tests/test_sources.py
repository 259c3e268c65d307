"""Frame sources: folders, globs and videos in order; a live source that fails reconnects; drops counted."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from diffdefect_edge.sources import FileSource, LiveSource, SourceError, open_source


def _frame(i: int) -> np.ndarray:
    f = np.zeros((48, 64, 3), np.uint8)
    f[:, :, 1] = (i * 10) % 256  # frame index readable back from the pixels (PNG is lossless)
    return f


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"img_{i:02d}.png"), _frame(i))
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(12):
        writer.write(_frame(i))
    writer.release()
    return path


def test_folder_and_glob_are_read_in_order(folder: Path):
    frames = list(open_source(folder))
    assert [int(f[0, 0, 1]) // 10 for f in frames] == [0, 1, 2, 3, 4]
    assert len(list(open_source(str(folder / "img_0[1-2].png")))) == 2


def test_video_frames_all_arrive(video: Path):
    src = open_source(video)
    assert isinstance(src, FileSource) and not src.live
    assert len(list(src)) == 12 and src.stats.frames == 12


def test_unreadable_image_is_skipped_and_counted(folder: Path):
    (folder / "img_99.png").write_bytes(b"broken")
    src = FileSource(folder)
    assert len(list(src)) == 5 and src.stats.failures == 1


@pytest.mark.parametrize("bad,message", [("missing_dir", "no such"), ("*.nothing", "matches no image")])
def test_bad_sources_name_the_problem(tmp_path: Path, bad, message):
    with pytest.raises(SourceError, match=message):
        open_source(str(tmp_path / bad))


def test_not_a_video_is_refused(tmp_path: Path):
    bogus = tmp_path / "x.mp4"
    bogus.write_bytes(b"nope")
    with pytest.raises(SourceError, match="cannot open"):
        open_source(bogus)


class FlakyCapture:
    """Delivers ``n`` frames then fails; the next open works again (a camera that drops its link)."""

    opens = 0

    def __init__(self, n: int, delay: float = 0.0) -> None:
        FlakyCapture.opens += 1
        self.left, self.delay = n, delay

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return True

    def read(self):
        if self.left == 0:
            return False, None
        self.left -= 1
        time.sleep(self.delay)
        return True, _frame(self.left)

    def release(self) -> None:
        pass


def test_live_source_reconnects_after_a_failure_and_goes_on():
    FlakyCapture.opens = 0
    src = LiveSource("fake", open_capture=lambda: FlakyCapture(3, delay=0.01), backoff=(0.01, 0.02))
    got = []
    for frame in src:
        got.append(frame)
        if len(got) == 7:
            break
    src.close()
    assert len(got) == 7 and src.stats.reconnects >= 2 and FlakyCapture.opens >= 3


def test_live_source_drops_stale_frames_for_a_slow_consumer():
    src = LiveSource("fast", open_capture=lambda: FlakyCapture(200, delay=0.001), backoff=(0.01, 0.02),
                     max_reconnects=0)
    taken = 0
    for _ in src:
        taken += 1
        time.sleep(0.02)
    assert taken + src.stats.dropped == 200 and src.stats.dropped > 0


def test_live_source_survives_a_capture_that_raises():
    calls = {"n": 0}

    def opener():
        calls["n"] += 1
        if calls["n"] != 2:  # only the second open works
            raise OSError("driver went away")
        return FlakyCapture(3)

    src = LiveSource("raising", open_capture=opener, backoff=(0.01, 0.01), max_reconnects=1)
    got = list(src)
    assert 1 <= len(got) <= 3 and src.stats.reconnects >= 1


def test_live_source_that_never_opens_gives_up_when_told():
    class Dead(FlakyCapture):
        def isOpened(self) -> bool:  # noqa: N802
            return False

    src = LiveSource("dead", open_capture=lambda: Dead(0), backoff=(0.01, 0.01), max_reconnects=2)
    done = threading.Event()
    threading.Thread(target=lambda: (list(src), done.set()), daemon=True).start()
    assert done.wait(5), "iteration should end once the source gave up"
    assert src.stats.reconnects == 2

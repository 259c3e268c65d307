"""The camera loop, the ``diffdefect-edge run`` command and the examples, on a generated video and folder."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from diffdefect_edge import Detector
from diffdefect_edge.cli import main as cli_main
from diffdefect_edge.loop import run_loop
from diffdefect_edge.sources import FileSource, LiveSource

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "diffdefect_edge.cli"]


def _write_video(path: Path, images: list[Path], repeats: int = 1, size: tuple[int, int] = (320, 240)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, size)
    for _ in range(repeats):
        for p in images:
            writer.write(cv2.resize(cv2.imread(str(p)), size))
    writer.release()
    return path


@pytest.fixture(scope="module")
def line_video(tmp_path_factory, tiny_dataset: Path) -> Path:
    images = sorted((tiny_dataset / "JPEGImages").iterdir())
    return _write_video(tmp_path_factory.mktemp("video") / "line.mp4", images)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory, tiny_dataset: Path) -> Path:
    images = sorted((tiny_dataset / "JPEGImages").iterdir())
    return _write_video(tmp_path_factory.mktemp("video") / "long.mp4", images, repeats=40)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_command_writes_jsonl_sqlite_crops_and_video(tiny_package: Path, line_video: Path, tmp_path: Path,
                                                         capsys):
    out = tmp_path / "out"
    args = ["run", "--model", str(tiny_package), "--source", str(line_video), "--jsonl", str(out / "r.jsonl"),
            "--db", str(out / "inspections.sqlite"), "--crops", str(out / "crops"), "--save", str(out / "a.mp4"),
            "--max-frames", "12", "--summary-json"]
    assert cli_main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 12 and summary["stopped_by"] == "max frames"

    records = _jsonl(out / "r.jsonl")
    assert [r["frame"] for r in records] == list(range(12))
    assert all({"timestamp", "latency_ms", "detections"} <= set(r) for r in records)
    with_defects = [r for r in records if r["detections"]]
    assert with_defects, "the tiny model should find defects on its own training images"
    assert summary["frames_with_defects"] == len(with_defects)

    db = sqlite3.connect(out / "inspections.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = db.execute("SELECT frame_index, num_defects FROM inspections ORDER BY frame_index").fetchall()
    assert rows == [(r["frame"], len(r["detections"])) for r in with_defects]
    crops = [p for (p,) in db.execute("SELECT crop_path FROM defects")]
    assert len(crops) == sum(len(r["detections"]) for r in with_defects) == summary["defects"]
    assert all(Path(p).is_file() for p in crops)

    cap = cv2.VideoCapture(str(out / "a.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 320

    # a second run is refused rather than mixed into the logs; --resume appends to both under a new run id,
    # --overwrite replaces both: the JSONL and the database always hold the same runs
    assert cli_main(args[:-3] + ["--max-frames", "3"]) == 2
    assert "exists" in capsys.readouterr().err
    assert len(_jsonl(out / "r.jsonl")) == 12
    assert cli_main(args[:-3] + ["--max-frames", "3", "--resume"]) == 2  # a video cannot be continued
    assert "--save" in capsys.readouterr().err
    resumed = [str(out / "b.mp4") if a == str(out / "a.mp4") else a for a in args[:-3]]
    assert cli_main(resumed + ["--max-frames", "3", "--resume"]) == 0
    assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2
    assert len(_jsonl(out / "r.jsonl")) == 15
    db.close()
    assert cli_main(args[:-3] + ["--max-frames", "3", "--overwrite"]) == 0
    with sqlite3.connect(out / "inspections.sqlite") as fresh:
        assert fresh.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
    assert len(_jsonl(out / "r.jsonl")) == 3


def test_run_command_in_throughput_mode_with_batches(tiny_package: Path, line_video: Path, tmp_path: Path, capsys):
    """Requests of 5 frames, the last one short (12 frames): the JSONL still has every frame, in order."""
    out = tmp_path / "r.jsonl"
    assert cli_main(["run", "--model", str(tiny_package), "--source", str(line_video), "--mode", "throughput",
                     "--batch", "5", "--max-frames", "12", "--jsonl", str(out), "--summary-json"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 12
    assert [r["frame"] for r in _jsonl(out)] == list(range(12))


def test_loop_results_match_detector_and_throughput_mode(tiny_package: Path, line_video: Path):
    frames = list(FileSource(line_video))
    with Detector(tiny_package) as det:
        expected = [det(f) for f in frames]
    got = []
    with Detector(tiny_package, mode="throughput") as det:
        summary = run_loop(det, FileSource(line_video), on_result=lambda i, f, d: got.append((i, d)))
    assert summary.frames == len(frames) and [i for i, _ in got] == list(range(len(frames)))
    for (_, d), e in zip(got, expected):
        assert len(d) == len(e)
        np.testing.assert_allclose(d.xyxy, e.xyxy, atol=0.05)


def test_bad_arguments_are_refused_before_any_output(tiny_package: Path, line_video: Path, tmp_path: Path, capsys):
    assert cli_main(["run", "--model", str(tiny_package), "--source", str(tmp_path / "nope.mp4")]) == 2
    assert "nope.mp4" in capsys.readouterr().err
    assert cli_main(["run", "--model", str(tmp_path), "--source", str(line_video)]) == 2
    assert "metadata.json" in capsys.readouterr().err
    (tmp_path / "folder.sqlite").mkdir()
    assert cli_main(["run", "--model", str(tiny_package), "--source", str(line_video),
                     "--db", str(tmp_path / "folder.sqlite")]) == 2
    assert "--db" in capsys.readouterr().err
    with Detector(tiny_package) as det, pytest.raises(ValueError, match="max_frames"):
        run_loop(det, FileSource(line_video), max_frames=0)


def test_live_source_failing_mid_stream_is_survived(tiny_package: Path, line_video: Path):
    frames = list(FileSource(line_video))
    opened = []

    delivered = [0]

    remaining = list(frames)

    class FlakyCamera:  # each connection delivers at most 5 of the remaining frames, then fails
        def __init__(self) -> None:
            opened.append(self)
            self.budget = 5

        def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
            return True

        def read(self):
            # a camera paced by its consumer, so the test does not depend on machine speed: the next frame comes
            # once the previous one was taken (or after 10 s, when it would count as dropped)
            deadline = time.monotonic() + 10
            while source.stats.frames < delivered[0] and time.monotonic() < deadline:
                time.sleep(0.002)
            if not remaining or self.budget == 0:
                return False, None
            delivered[0] += 1
            self.budget -= 1
            return True, remaining.pop(0)

        def release(self) -> None:
            pass

    source = LiveSource("flaky", open_capture=FlakyCamera, backoff=(0.01, 0.02), max_reconnects=1)
    with Detector(tiny_package) as det:
        summary = run_loop(det, source)
    assert summary.reconnects >= 1  # the loop went on through the failure
    assert summary.frames + summary.dropped == len(frames)
    assert summary.frames == len(frames) and summary.dropped == 0


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the loop")
        time.sleep(0.1)


def _count_rows(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM inspections").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_with_a_summary(tiny_package: Path, long_video: Path, tmp_path: Path, sig):
    jsonl = tmp_path / "r.jsonl"
    proc = subprocess.Popen(CLI + ["run", "--model", str(tiny_package), "--source", str(long_video), "--jsonl",
                                   str(jsonl), "--max-fps", "30", "--summary-json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: jsonl.exists() and len(jsonl.read_text().splitlines()) >= 5)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["stopped_by"] == f"signal ({sig.name})"
    records = _jsonl(jsonl)  # every line complete
    assert len(records) == summary["frames"] < 16 * 40


def test_killed_process_loses_no_committed_row(tiny_package: Path, long_video: Path, tmp_path: Path):
    db = tmp_path / "inspections.sqlite"
    proc = subprocess.Popen(CLI + ["run", "--model", str(tiny_package), "--source", str(long_video), "--db", str(db),
                                   "--max-fps", "40"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _count_rows(db) >= 5)
        seen = _count_rows(db)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT id, num_defects FROM inspections").fetchall()
        assert len(rows) >= seen
        for inspection_id, num in rows:  # each inspection landed with all its defects
            assert conn.execute("SELECT COUNT(*) FROM defects WHERE inspection_id = ?",
                                (inspection_id,)).fetchone()[0] == num


def test_stop_event_ends_the_loop_from_another_thread(tiny_package: Path, long_video: Path):
    stop = threading.Event()
    with Detector(tiny_package) as det:
        threading.Timer(0.5, stop.set).start()
        summary = run_loop(det, FileSource(long_video), max_fps=50, stop=stop)
    assert summary.stopped_by == "signal" and 0 < summary.frames < 16 * 40


# ---- examples: each runs as a user would run it ----

def _example(name: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "examples" / name), *map(str, args)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_example_camera_loop(tiny_package: Path, line_video: Path):
    lines = [json.loads(x) for x in _example("camera_loop.py", "--model", tiny_package, "--source", line_video,
                                             "--min-score", "0.05", "--max-frames", "10").splitlines()]
    final = lines[-1]
    assert final["frames"] == 10 and final["rejected"] == len(lines) - 1 > 0
    assert all(x["reject"] and x["detections"] for x in lines[:-1])


def test_example_inspect_folder(tiny_package: Path, tiny_dataset: Path, tmp_path: Path):
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted((tiny_dataset / "JPEGImages").iterdir())[:5]:
        (images / p.name).write_bytes(p.read_bytes())
    (images / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "inspected"
    stdout = _example("inspect_folder.py", "--model", tiny_package, "--images", images, "--out", out)
    assert "skipped" in stdout and "broken.png" in stdout
    rows = (out / "defects.csv").read_text().splitlines()
    assert rows[0].startswith("image,class,score") and len(rows) > 1
    assert len(list(out.glob("*_inspected.png"))) == 5


def test_example_video_to_report(tiny_package: Path, line_video: Path, tmp_path: Path):
    out = tmp_path / "report"
    _example("video_to_report.py", "--model", tiny_package, "--video", line_video, "--out", out)
    report = (out / "report.md").read_text()
    assert "16 frames" in report and "| class | defects |" in report
    assert (out / "annotated.mp4").stat().st_size > 0 and list(out.glob("best_*.png"))


# ------------------------------------------------------------------ traceable, restart-safe records

def _folder_with_bad_files(tiny_dataset: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "parts"
    folder.mkdir()
    images = sorted((tiny_dataset / "JPEGImages").iterdir())[:4]
    for i, p in enumerate(images):
        (folder / f"{i * 2:03d}.jpg").write_bytes(p.read_bytes())
    (folder / "001.jpg").write_bytes(images[0].read_bytes()[:400])  # truncated: no end-of-image marker
    (folder / "003.jpg").write_bytes(b"not an image")
    black = np.zeros((128, 128, 3), np.uint8)
    cv2.imwrite(str(folder / "005.png"), black)  # a lens cap
    return folder


def test_records_carry_their_file_and_bad_files_are_counted(tiny_package: Path, tiny_dataset: Path,
                                                            tmp_path: Path, capsys):
    folder = _folder_with_bad_files(tiny_dataset, tmp_path)
    jsonl, db = tmp_path / "r.jsonl", tmp_path / "r.sqlite"
    assert cli_main(["run", "--model", str(tiny_package), "--source", str(folder), "--jsonl", str(jsonl), "--db",
                     str(db), "--conf", "0.01", "--summary-json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["unreadable"] == 2 and summary["unhealthy"] == 1 and summary["frames"] == 5
    records = _jsonl(jsonl)
    names = [Path(r["source"]["path"]).name for r in records]
    assert names == ["000.jpg", "002.jpg", "004.jpg", "005.png", "006.jpg"]  # frame k names its file
    lens_cap = records[3]
    assert lens_cap["inspected"] is False and lens_cap["detections"] == []
    assert "underexposed" in lens_cap["health"]["problems"][0]
    with sqlite3.connect(db) as conn:
        refs = [json.loads(r[0])["path"] for r in conn.execute("SELECT source_ref FROM inspections")]
    assert refs and all(Path(r).parent == folder for r in refs)


def test_a_restart_appends_both_logs_under_a_new_run_id(tiny_package: Path, line_video: Path, tmp_path: Path,
                                                        capsys):
    jsonl, db = tmp_path / "r.jsonl", tmp_path / "r.sqlite"
    args = ["run", "--model", str(tiny_package), "--source", str(line_video), "--jsonl", str(jsonl), "--db", str(db),
            "--max-frames", "3", "--conf", "0.01"]
    assert cli_main(args) == 0
    with jsonl.open("a") as f:
        f.write('{"run_id": 1, "frame": 3, "timest')  # the crash cut the last line
    assert cli_main(args) == 2  # the same command refuses to clobber the logs ...
    assert "--resume" in capsys.readouterr().err
    assert cli_main(args + ["--resume"]) == 0  # ... and continues them
    lines = jsonl.read_text().splitlines()
    runs = [json.loads(line)["run_id"] for line in lines if line.endswith("}")]
    assert runs == [1, 1, 1, 2, 2, 2]
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT id FROM runs ORDER BY id")] == [1, 2]
        assert {r[0] for r in conn.execute("SELECT run_id FROM inspections")} <= {1, 2}
    assert cli_main(args + ["--overwrite"]) == 0  # a fresh start replaces both
    assert len(_jsonl(jsonl)) == 3
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
    assert cli_main(args + ["--overwrite", "--resume"]) == 2


def test_summary_json_is_strict_when_no_frame_ran(tiny_package: Path, tmp_path: Path, capsys):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "000.jpg").write_bytes(b"junk")
    assert cli_main(["run", "--model", str(tiny_package), "--source", str(folder), "--summary-json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} in the summary"))
    assert summary["frames"] == 0 and summary["latency_p50_ms"] is None


def test_info_json_into_a_closed_pipe_exits_cleanly(tiny_package: Path):
    proc = subprocess.run(f"{sys.executable} -m diffdefect_edge.cli info --json {tiny_package} | head -c 10",
                          shell=True, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_stop_during_a_reconnect_backoff_is_quick():
    class DeadCamera:
        def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
            return False

        def release(self) -> None:
            pass

    source = LiveSource("dead", open_capture=DeadCamera, backoff=(5.0, 10.0))
    time.sleep(0.2)  # the grabber is now waiting out its 5 s backoff
    start = time.perf_counter()
    source.close()
    assert time.perf_counter() - start < 0.5 and not source._thread.is_alive()


def test_the_loop_runs_sliced_inference_and_records_verdicts(tiny_package: Path, line_video: Path, tmp_path: Path,
                                                             capsys):
    jsonl = tmp_path / "tiles.jsonl"
    assert cli_main(["run", "--model", str(tiny_package), "--source", str(line_video), "--jsonl", str(jsonl),
                     "--max-frames", "3", "--tile", "128", "--conf", "0.05", "--summary-json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    records = _jsonl(jsonl)
    assert len(records) == 3 and summary["ok"] + summary["ng"] == 3
    assert all(r["verdict"]["status"] == ("NG" if r["detections"] else "OK") for r in records)
    assert cli_main(["run", "--model", str(tiny_package), "--source", str(line_video), "--tile", "8"]) == 2

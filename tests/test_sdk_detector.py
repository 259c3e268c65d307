"""The SDK's Detector on a real exported package: bad frames, threads, streaming, benchmark, CLI, no torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from diffdefect_edge import Detections, Detector, PackageError
from diffdefect_edge.cli import main as sdk_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def detector(tiny_package: Path):
    with Detector(tiny_package, conf=0.02) as det:
        yield det


def _same(a: Detections, b: Detections) -> bool:
    return len(a) == len(b) and np.allclose(a.xyxy, b.xyxy, atol=1e-3) and np.allclose(a.scores, b.scores, atol=1e-5)


@pytest.mark.parametrize("bad", [None, np.zeros((0, 0, 3), np.uint8), np.zeros((64, 64, 3), np.float32),
                                 np.full((64, 64, 3), np.nan, np.float32), np.zeros((64, 64, 2), np.uint8),
                                 "no-such-frame.png", 3.5])
def test_bad_frames_raise_and_the_detector_stays_usable(detector: Detector, frames, bad):
    with pytest.raises(ValueError, match="expected"):
        detector(bad)
    assert isinstance(detector(frames[0]), Detections)


def test_gray_rgb_and_batch_inputs(detector: Detector, frames):
    frame = frames[0]
    ref = detector(frame)
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    assert _same(detector(gray), detector(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)))
    assert _same(detector(np.ascontiguousarray(frame[:, :, ::-1]), color="rgb"), ref)
    batch = detector.predict_batch(frames[:3])
    assert len(batch) == 3 and _same(batch[0], ref)
    assert detector.predict_batch([]) == []


def test_detections_are_in_frame_pixels_of_any_frame_size(tiny_package: Path, frames):
    big = cv2.resize(frames[0], (1280, 720))
    with Detector(tiny_package, conf=0.001) as low_conf:  # low enough that the tiny model always reports boxes
        dets = low_conf(big)
    assert dets.xyxy.dtype == np.float32 and len(dets) > 0
    assert dets.xyxy[:, [0, 2]].min() >= 0 and dets.xyxy[:, [1, 3]].min() >= 0
    assert dets.xyxy[:, [0, 2]].max() <= 1280 and dets.xyxy[:, [1, 3]].max() <= 720
    d = json.loads(dets.to_json())
    assert len(d["detections"]) == len(dets)
    assert dets.draw(big).shape == big.shape
    if dets.masks is not None:
        assert dets.masks.shape == (len(dets), 720, 1280)


def test_every_batch_size_matches_single_frames(detector: Detector, frames):
    """OpenVINO compiles one static-shape graph per batch size and keeps the last few: batches of 1 to 6 frames
    (more sizes than it keeps, so graphs are dropped and rebuilt) give what single frames give."""
    single = [detector(f) for f in frames[:6]]
    for n in (3, 1, 6, 2, 5, 4, 3):
        batch = detector.predict_batch(frames[:n])
        assert all(_same(a, b) for a, b in zip(batch, single[:n]))


def test_threads_get_the_same_results_as_sequential_calls(detector: Detector, frames):
    sequential = [detector(f) for f in frames]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(detector, frames * 3))
    assert all(_same(a, b) for a, b in zip(sequential * 3, threaded))


@pytest.mark.parametrize("batch", [None, 1, 3])
def test_throughput_stream_keeps_frame_order(tiny_package: Path, frames, batch):
    """Batched requests in flight, a short last batch (19 frames), results in input order equal to sync calls."""
    with Detector(tiny_package, conf=0.02) as sync_det:
        expected = [sync_det(f) for f in frames]
    sources = (frames * 3)[:19]
    with Detector(tiny_package, conf=0.02, mode="throughput") as det:
        out = list(det.stream(iter(sources), batch=batch))
    assert len(out) == len(sources)
    for (frame, dets), ref, src in zip(out, (expected * 3)[:19], sources):
        assert frame is src and _same(dets, ref)


def test_stream_refuses_a_bad_batch(detector: Detector, frames):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch"):
            next(detector.stream(frames, batch=bad))
    with pytest.raises(ValueError, match="throughput"):
        next(detector.stream(frames, batch=4))  # latency mode runs one frame at a time


def test_benchmark_reports_raw_and_end_to_end(detector: Detector):
    stats = detector.benchmark(runs=5, warmup=1)
    assert stats["raw_p50_ms"] > 0 and stats["end_to_end_p50_ms"] > 0 and stats["fps"] > 0


def test_bad_arguments_and_tampered_packages_are_refused(tiny_package: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="precision"):
        Detector(tiny_package, precision="fp8")
    with pytest.raises(ValueError, match="mode"):
        Detector(tiny_package, mode="fast")
    with pytest.raises(ValueError, match="conf"):
        Detector(tiny_package, conf=1.5)
    copy = tmp_path / "pkg"
    shutil.copytree(tiny_package, copy)
    xml = copy / "openvino" / "model_fp32.xml"
    xml.write_text(xml.read_text().replace("detections", "detectionz", 1))
    with pytest.raises(PackageError, match="sha256"):
        Detector(copy)


def test_info_command_verifies_and_describes(tiny_package: Path, capsys, tmp_path: Path):
    assert sdk_main(["info", str(tiny_package)]) == 0
    out = capsys.readouterr().out
    assert "checksums OK" in out and "openvino  int8" in out
    broken = tmp_path / "broken"
    shutil.copytree(tiny_package, broken)
    (broken / "model.onnx").write_bytes(b"x")
    assert sdk_main(["info", str(broken)]) == 2
    assert "model.onnx" in capsys.readouterr().err


def test_bench_command_tables_every_precision_and_mode(tiny_package: Path, capsys):
    assert sdk_main(["bench", str(tiny_package), "--runs", "6", "--backends", "openvino"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert {(r[0], r[1], r[2]) for r in rows} == {("openvino", p, m) for p in ("fp32", "fp16", "int8")
                                                  for m in ("latency", "throughput")}
    assert all(float(r[-1]) > 0 and float(r[3]) > 0 for r in rows)  # fps and raw p50
    assert sdk_main(["bench", str(tiny_package), "--modes", "fast"]) == 2
    assert "--modes" in capsys.readouterr().err


def test_detector_runs_with_torch_unimportable(tiny_package: Path, frames, tmp_path: Path):
    image = tmp_path / "f.png"
    cv2.imwrite(str(image), frames[0])
    code = ("import sys; sys.modules['torch'] = None\n"
            "import cv2\nfrom diffdefect_edge import Detector\n"
            f"det = Detector({str(tiny_package)!r}, conf=0.02)\n"
            f"print(len(det(cv2.imread({str(image)!r}))))\n"
            f"det2 = Detector({str(tiny_package)!r}, backend='onnxruntime', conf=0.02)\n"
            f"print(len(det2(cv2.imread({str(image)!r}))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    a, b = proc.stdout.split()
    assert a == b

"""SDK latency: what the line integrator relies on, measured as ratios within one run.

    python -m pytest benchmarks/test_sdk.py --benchmark-json=benchmarks/sdk.json
    python benchmarks/report.py benchmarks/sdk.json

Per backend and precision, in the same process:
- ``raw``: the backend's inference on an already prepared input tensor (what a model benchmark measures);
- ``end_to_end``: ``det(frame)`` on a camera-sized 1280x720 BGR frame (validation, letterbox, inference,
  decode, NMS, boxes mapped back to the frame).
end_to_end / raw is reported as a figure (taken on the two timed alternately call by call; the pytest-benchmark
groups time them one after the other and are shown for reference) and fails only above 1.15, a regression: the
SDK's own overhead is under 2% back to back, and the rest of the figure's spread on these VMs is the machine's
(docs/benchmarks.md).
And the stream over 256 frames in latency (``sync``) vs ``throughput`` mode (OpenVINO AsyncInferQueue, requests
of 4 frames): target throughput fps / sync fps >= 1.5 on 2 cores, checked on the two modes run alternately. 256
frames, not fewer, because a camera loop runs in steady state: a 64-frame stream is only 16 requests, and the
pipeline's fill and its last, unevenly shared requests weigh on it: in 4 of 6 paired runs here throughput mode
took 4 to 31% more time per frame over 64 frames than over 256 (1 to 7% less in the other 2).

The package is the quickstart's architecture (``n`` at 160 px), trained for one epoch on a small synthetic set
(weights do not change the cost), exported with an INT8 model.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("torch")

from timing import alternating_medians  # noqa: E402  (benchmarks/timing.py)

from diffdefect_edge import Detector  # noqa: E402
from diffdefect_edge.backends import BackendError  # noqa: E402

E2E_REGRESSION, THROUGHPUT_TARGET = 1.15, 1.5
CASES = [("openvino", "fp32"), ("openvino", "int8"), ("onnxruntime", "fp32")]
FRAMES = 256

@pytest.fixture(scope="session")
def frame():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)


def _detector(package, backend, precision, **kw):
    try:
        return Detector(package, backend=backend, precision=precision, **kw)
    except BackendError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("impl", ["raw", "end_to_end"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "/".join(c))
def test_latency(benchmark, package, frame, case, impl):
    benchmark.group = f"latency {'/'.join(case)}"
    with _detector(package, *case) as det:
        canvas, _ = det.prepare(frame)
        tensor = det.backend.model_input(canvas[None])
        fn = (lambda: det.backend.infer_prepared(tensor)) if impl == "raw" else (lambda: det(frame))
        for _ in range(10):
            fn()
        benchmark.pedantic(fn, rounds=200, warmup_rounds=5, iterations=1)


IDLE_GAP_S = 0.004  # about one inference of the bench model here


def _busy_wait(seconds: float) -> None:
    """Spin without touching any data (the core stays busy, so its clock does not drop as it would asleep)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _before_call(det, tensor, impl: str):
    """The untimed step before each timed call: nothing (``warm``: back to back), the raw inference that
    precedes it inside ``det(frame)`` (``after_inference``), or a busy wait of about that long that touches no
    data (``after_idle``). If ``after_idle`` costs about what ``after_inference`` does, the slowdown is the
    machine's (its caches emptied by other tenants within milliseconds), not the inference's."""
    def before() -> None:  # pytest-benchmark takes what a setup returns as the call's arguments
        if impl == "after_inference":
            det.backend.infer_prepared(tensor)
        else:
            _busy_wait(IDLE_GAP_S)

    return None if impl == "warm" else before


@pytest.mark.parametrize("impl", ["warm", "after_inference", "after_idle"])
def test_letterbox_cost(benchmark, package, frame, impl):
    """What reading the camera frame costs: ``det.prepare(frame)`` (checks + OpenCV letterbox of 1280x720)
    called back to back, right after a raw inference (as inside ``det(frame)``), and after an idle gap."""
    benchmark.group = "letterbox 1280x720 openvino/fp32"
    with _detector(package, "openvino", "fp32") as det:
        canvas, _ = det.prepare(frame)
        tensor = det.backend.model_input(canvas[None])
        benchmark.pedantic(lambda: det.prepare(frame), setup=_before_call(det, tensor, impl), rounds=200,
                           warmup_rounds=5, iterations=1)


@pytest.mark.parametrize("impl", ["warm", "after_inference", "after_idle"])
def test_postprocess_cost(benchmark, package, frame, impl):
    """What turning one frame's raw output into Detections costs (decode + NMS in the extension, boxes to frame
    pixels, the Detections): back to back, right after a raw inference (as inside ``det(frame)``), and after an
    idle gap."""
    benchmark.group = "postprocess openvino/fp32"
    with _detector(package, "openvino", "fp32") as det:
        canvas, placement = det.prepare(frame)
        tensor = det.backend.model_input(canvas[None])
        dets, _ = det.backend.infer_prepared(tensor)
        benchmark.pedantic(lambda: det.postprocess(dets[0], None, placement), setup=_before_call(det, tensor, impl),
                           rounds=200, warmup_rounds=5, iterations=1)


@pytest.mark.parametrize("impl", ["sync", "throughput"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_stream_fps(benchmark, package, frame, precision, impl):
    benchmark.group = f"stream {FRAMES} frames openvino/{precision}"
    frames = [frame] * FRAMES
    mode = "latency" if impl == "sync" else "throughput"
    with _detector(package, "openvino", precision, mode=mode) as det:
        run = lambda: sum(1 for _ in det.stream(frames))  # noqa: E731
        run()
        benchmark.pedantic(run, rounds=7, warmup_rounds=1, iterations=1)


def _interleaved_ratio(det, frame, rounds: int = 300) -> float:
    """Median of end-to-end over median of raw, the two timed alternately call by call (raw first, as inside a
    camera loop the frame comes after the previous inference)."""
    canvas, _ = det.prepare(frame)
    tensor = det.backend.model_input(canvas[None])
    raw, e2e = alternating_medians([lambda: det.backend.infer_prepared(tensor), lambda: det(frame)], rounds,
                                   warmup=20)
    return e2e / raw


def _interleaved_stream_speedup(package, frame, precision: str, rounds: int = 7) -> float:
    """Median sync time over median throughput time for the stream, the two modes run alternately."""
    frames = [frame] * FRAMES
    with _detector(package, "openvino", precision) as sync_det, \
            _detector(package, "openvino", precision, mode="throughput") as tp_det:
        sync, throughput = alternating_medians([lambda: sum(1 for _ in sync_det.stream(frames)),
                                                lambda: sum(1 for _ in tp_det.stream(frames))], rounds)
    return sync / throughput


def test_targets_as_ratios(package, frame):
    failures, lines = [], []
    for case in CASES:
        with _detector(package, *case) as det:
            ratio = _interleaved_ratio(det, frame)
        lines.append(f"{'/'.join(case)}: end_to_end / raw = {ratio:.3f} (interleaved; must be <= {E2E_REGRESSION})")
        if ratio > E2E_REGRESSION:
            failures.append(lines[-1])
    for precision in ("fp32", "int8"):
        speedup = _interleaved_stream_speedup(package, frame, precision)
        lines.append(f"openvino/{precision}: throughput / sync fps = {speedup:.3f} (interleaved; target >= "
                     f"{THROUGHPUT_TARGET})")
        if speedup < THROUGHPUT_TARGET:
            failures.append(lines[-1])
    print("\n".join(lines))
    assert not failures, "targets missed:\n" + "\n".join(failures)

"""The SDK at a real line: large frames, masks, sliced inference, bf16, the model cache, measured in one run.

    python -m pytest benchmarks/test_line.py -s

Targets: a 4000x3000 noise frame (many boxes) costs at most 1.5x a flat gray frame of that size end to end, with
masks asked for, and one such call peaks under 600 MB (a fresh process, RSS). Reported as figures: sliced
inference frames per second against the width of a line-scan strip; bf16 against f32 raw inference; start-up
time with and without OpenVINO's model cache.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("torch")

from timing import alternating_medians  # noqa: E402  (benchmarks/timing.py)

from diffdefect_edge import Detector  # noqa: E402

LARGE_RATIO_TARGET, PEAK_MB_TARGET = 1.5, 600


def test_large_noise_frame_costs_about_a_flat_one(package):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (3000, 4000, 3), dtype=np.uint8)
    flat = np.full((3000, 4000, 3), 128, np.uint8)
    # conf 0.01: the one-epoch model then reports many boxes on noise; health off: the flat frame is inspected too
    with Detector(package, conf=0.01, masks=True, health=None) as det:
        boxes = len(det(noise))
        noisy, plain = alternating_medians([lambda: det(noise), lambda: det(flat)], rounds=15, warmup=2)
    ratio = noisy / plain
    print(f"\n4000x3000 noise ({boxes} boxes, masks on) / flat gray: {ratio:.3f} ({noisy * 1e3:.1f} ms vs "
          f"{plain * 1e3:.1f} ms; target <= {LARGE_RATIO_TARGET})")
    assert ratio <= LARGE_RATIO_TARGET


def test_large_frame_peak_memory(package):
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's size at fork (pytest has torch loaded)
    code = textwrap.dedent(f"""
        import numpy as np
        from diffdefect_edge import Detector
        det = Detector({str(package)!r}, conf=0.01, masks=True, health=None)
        frame = np.random.default_rng(0).integers(0, 255, (3000, 4000, 3), dtype=np.uint8)
        d = det(frame)
        for i in range(min(len(d), 20)):
            d.mask(i)  # masks pasted on demand, one at a time
        hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]
        print(len(d), int(hwm) / 1024)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    boxes, peak = proc.stdout.split()
    print(f"\n4000x3000 noise frame, {boxes} boxes with masks: peak RSS {float(peak):.0f} MB "
          f"(target < {PEAK_MB_TARGET} MB)")
    assert float(peak) < PEAK_MB_TARGET


@pytest.mark.parametrize("width", [1024, 2048, 4096, 8192])
def test_sliced_inference_fps_against_strip_width(package, width):
    strip = np.random.default_rng(1).integers(0, 255, (512, width, 3), dtype=np.uint8)
    with Detector(package, tile=512, health=None) as det:
        det(strip)
        runs = 5
        start = time.perf_counter()
        for _ in range(runs):
            out = det(strip)
        fps = runs / (time.perf_counter() - start)
    print(f"\nsliced inference, 512 x {width} strip in 512 px tiles ({out.meta['tiles']} tiles + the whole frame): "
          f"{fps:.1f} fps")
    assert fps > 0


def test_bf16_against_f32(package):
    import openvino as ov

    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no bf16 arithmetic")
    with Detector(package, precision="fp32") as f32, Detector(package, precision="bf16") as bf16:
        canvas, _ = f32.prepare(f32.sample_frame())
        tensor = canvas[None]
        t32, t16 = alternating_medians([lambda: f32.backend.infer_prepared(tensor),
                                        lambda: bf16.backend.infer_prepared(tensor)], rounds=200, warmup=20)
    print(f"\nraw inference bf16 / f32: {t16 / t32:.3f} ({t16 * 1e3:.2f} ms vs {t32 * 1e3:.2f} ms)")


def test_start_up_with_and_without_the_model_cache(package, tmp_path):
    code = textwrap.dedent("""
        import sys, time
        start = time.perf_counter()
        from diffdefect_edge import Detector
        det = Detector(sys.argv[1], cache_dir=sys.argv[2] if len(sys.argv) > 2 else None)
        det(det.sample_frame())
        print(time.perf_counter() - start)
    """)

    def start_up(*extra: str) -> float:
        proc = subprocess.run([sys.executable, "-c", code, str(package), *extra], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        return float(proc.stdout)

    cache = tmp_path / "cache"
    start_up(str(cache))  # fills the cache
    cold = sorted(start_up() for _ in range(3))[1]
    warm = sorted(start_up(str(cache)) for _ in range(3))[1]
    print(f"\nstart-up to the first result (median of 3 fresh processes): {cold:.3f} s without the model cache, "
          f"{warm:.3f} s with it")

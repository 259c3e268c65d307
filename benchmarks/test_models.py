"""Detector architectures at the line: raw OpenVINO latency of the dense n model against the depthwise n model.

    python -m pytest benchmarks/test_models.py -s

FLOPs do not rank CPU latency: depthwise convolutions run far below a core's peak, dense 3 x 3 convolutions
close to it. The dense model is chosen only if its raw latency (the compiled model on a prepared 224 px input,
FP32, the bench process' threads) stays within ``LATENCY_LIMIT`` of the depthwise model's, measured alternately
call by call in one process, and its GFLOPs within ``GFLOPS_LIMIT`` (YOLOv8n's budget at 224 px). Weights do not
change the cost, so both models are untrained.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ov = pytest.importorskip("openvino")

from timing import alternating_medians  # noqa: E402  (benchmarks/timing.py)

from training.detector.model import DefectDetector, DeployModel, DetectorSpec, count_gflops  # noqa: E402

SIZE, CLASSES = 224, 6
LATENCY_LIMIT, GFLOPS_LIMIT = 1.15, 1.0


def _compiled(depthwise: bool):
    torch.manual_seed(0)
    detector = DefectDetector(DetectorSpec(CLASSES, "n", depthwise=depthwise)).eval()
    example = torch.zeros(1, 3, SIZE, SIZE)
    model = ov.convert_model(DeployModel(detector, SIZE).eval(), example_input=example)
    core = ov.Core()
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
    return compiled.create_infer_request(), count_gflops(detector, SIZE)


def test_dense_model_latency_against_depthwise(benchmark):
    x = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    (dense, dense_gflops), (depthwise, dw_gflops) = _compiled(False), _compiled(True)
    dense_ms, dw_ms = (1000 * t for t in alternating_medians([lambda: dense.infer([x]), lambda: depthwise.infer([x])],
                                                             rounds=300, warmup=20))
    ratio = dense_ms / dw_ms
    benchmark.extra_info.update(dense_ms=dense_ms, depthwise_ms=dw_ms, ratio=ratio, dense_gflops=dense_gflops,
                                depthwise_gflops=dw_gflops)
    print(f"\nraw OpenVINO FP32 at {SIZE} px: dense n {dense_ms:.2f} ms ({dense_gflops:.2f} GFLOPs), depthwise n "
          f"{dw_ms:.2f} ms ({dw_gflops:.2f} GFLOPs): ratio {ratio:.3f} (limit {LATENCY_LIMIT})")
    benchmark.pedantic(lambda: dense.infer([x]), rounds=50, warmup_rounds=5, iterations=1)
    assert dense_gflops <= GFLOPS_LIMIT
    assert ratio <= LATENCY_LIMIT, f"dense n is {ratio:.2f}x the depthwise n model's raw latency"

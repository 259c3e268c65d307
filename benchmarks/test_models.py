"""Detector architectures at the line: raw OpenVINO latency of the NEU-DET recipe's model
(``configs/neu-det.yaml``) against the depthwise n model, the student the SDK shipped first.

    python -m pytest benchmarks/test_models.py -s

FLOPs do not rank CPU latency: depthwise convolutions run far below a core's peak, dense 3 x 3 convolutions
close to it. The recipe's model is kept only if its raw latency (the compiled model on a prepared 224 px input,
FP32, the bench process' threads) stays within ``LATENCY_LIMIT`` of the depthwise model's, measured alternately
call by call in one process, and its GFLOPs within ``GFLOPS_LIMIT`` (YOLOv8n's budget at 224 px). The other
candidates are timed in the same rounds and printed, so the choice can be revisited. Weights do not change the
cost, so every model is untrained.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ov = pytest.importorskip("openvino")

from conftest import REPO  # noqa: E402
from timing import alternating_medians  # noqa: E402  (benchmarks/timing.py)

from training.config import load_config  # noqa: E402
from training.detector.model import DefectDetector, DeployModel, DetectorSpec, count_gflops  # noqa: E402

SIZE, CLASSES = 224, 6
LATENCY_LIMIT, GFLOPS_LIMIT = 1.15, 1.0
CANDIDATES = {"depthwise": {"depthwise": True}, "dense": {"depthwise": False},
              "dense, depthwise heads": {"depthwise": False, "depthwise_heads": True},
              "depthwise, dense heads": {"depthwise": True, "depthwise_heads": False}}


def _recipe() -> dict[str, bool | None]:
    model = load_config(REPO / "configs" / "neu-det.yaml").model
    return {"depthwise": model.depthwise, "depthwise_heads": model.depthwise_heads}


def _compiled(options: dict[str, bool | None]):
    torch.manual_seed(0)
    detector = DefectDetector(DetectorSpec(CLASSES, "n", **options)).eval()
    example = torch.zeros(1, 3, SIZE, SIZE)
    model = ov.convert_model(DeployModel(detector, SIZE).eval(), example_input=example)
    core = ov.Core()
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
    return compiled.create_infer_request(), count_gflops(detector, SIZE)


def test_recipe_model_latency_against_depthwise(benchmark):
    x = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    models = {"recipe": _recipe(), **CANDIDATES}
    compiled = {name: _compiled(options) for name, options in models.items()}
    calls = [lambda r=request: r.infer([x]) for request, _ in compiled.values()]
    medians = dict(zip(models, (1000 * t for t in alternating_medians(calls, rounds=300, warmup=20))))
    reference = medians["depthwise"]
    print(f"\nraw OpenVINO FP32 at {SIZE} px, against the depthwise n model ({reference:.2f} ms):")
    for name, ms in medians.items():
        print(f"  {name:24s} {ms:6.2f} ms  {ms / reference:5.3f}x  {compiled[name][1]:.2f} GFLOPs  {models[name]}")
    ratio, gflops = medians["recipe"] / reference, compiled["recipe"][1]
    benchmark.extra_info.update(recipe_ms=medians["recipe"], depthwise_ms=reference, ratio=ratio,
                                recipe_gflops=gflops, candidates_ms=medians)
    request = compiled["recipe"][0]
    benchmark.pedantic(lambda: request.infer([x]), rounds=50, warmup_rounds=5, iterations=1)
    assert gflops <= GFLOPS_LIMIT
    assert ratio <= LATENCY_LIMIT, f"the recipe's model is {ratio:.2f}x the depthwise n model's raw latency"

"""Evaluate an exported model package on a dataset, through the SDK's own Detector (same letterbox, decode
and NMS as at the line), for every precision it holds; write ``metrics.json`` and a markdown report.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from diffdefect_edge import Detector, load_package
from diffdefect_edge.backends import FILE_KIND, BackendError
from diffdefect_edge.metadata import PackageMetadata
from diffdefect_edge.threads import thread_budget
from training.data import Dataset, load_dataset
from training.data.torch_dataset import read_image
from training.evaluation.metrics import DetectionMetrics, Prediction, evaluate_detections, save_pr_curves
from training.evaluation.torch_predict import EVAL_CONF, EVAL_IOU

log = logging.getLogger(__name__)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def load_eval_dataset(data: str | Path, class_names: list[str], split_file: str | Path | None = None,
                      subset: str = "val") -> Dataset:
    """The dataset at ``data`` with the package's class names; restricted to a split's ids when given."""
    dataset = load_dataset(data, class_names=class_names)
    if split_file is None:
        return dataset
    split = json.loads(Path(split_file).read_text())
    if subset not in split:
        raise ValueError(f"{split_file}: has no subset {subset!r} (it has {sorted(k for k in split if k != 'class_names')})")
    wanted = set(split[subset])
    keep = [i for i, r in enumerate(dataset.records) if r.image_id in wanted]
    if len(keep) != len(wanted):
        raise ValueError(f"{split_file}: {len(wanted) - len(keep)} {subset} image ids are not in {data}")
    return dataset.subset(keep)


def run_detector(detector: Detector, dataset: Dataset, desc: str) -> tuple[list[Prediction], list[float]]:
    """Predictions over the dataset and the per-image end-to-end latency (ms) of each call."""
    preds: list[Prediction] = []
    latencies: list[float] = []
    for idx, rec in enumerate(tqdm(dataset.records, desc=desc, leave=False, mininterval=1.0)):
        frame = read_image(rec.image_path)
        start = time.perf_counter()
        dets = detector(frame)
        latencies.append((time.perf_counter() - start) * 1e3)
        preds += [Prediction(idx, int(c), tuple(float(v) for v in b), float(s))
                  for b, s, c in zip(dets.xyxy, dets.scores, dets.class_ids)]
    return preds, latencies


def evaluate_package(package: str | Path, data: str | Path, out_dir: str | Path, split_file: str | Path | None = None,
                     subset: str = "val", backends: tuple[str, ...] = ("openvino", "onnxruntime"),
                     latency_runs: int = 50, compute_precisions: tuple[str, ...] = ()) -> dict[str, Any]:
    """mAP (pycocotools) and latency of every model of the package on ``data``; ``compute_precisions``
    ("bf16") adds OpenVINO runs of the FP32 model in that arithmetic, where the CPU has it."""
    pkg = load_package(package)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = load_eval_dataset(data, pkg.class_names, split_file, subset)
    if not dataset.records:
        raise ValueError(f"{data}: no images to evaluate")
    sample = read_image(dataset.records[0].image_path)
    results: dict[str, dict[str, Any]] = {}
    metrics_by: dict[str, DetectionMetrics] = {}
    jobs = [(backend, m.precision) for backend in backends for m in pkg.models if m.backend == FILE_KIND[backend]]
    if "openvino" in backends and any(m.backend == "openvino" and m.precision == "fp32" for m in pkg.models):
        jobs += [("openvino", p) for p in compute_precisions]
    for backend, precision in jobs:
        key = f"{backend}/{precision}"
        try:
            # mAP protocol: multi-label boxes at a very low threshold, and every image inspected
            det = Detector(pkg, backend=backend, precision=precision, conf=EVAL_CONF, iou=EVAL_IOU,
                           num_threads=thread_budget(), multi_label=True, health=None)
        except BackendError as exc:
            log.warning("skipping %s: %s", key, exc)
            continue
        preds, _ = run_detector(det, dataset, key)
        metrics = evaluate_detections(dataset.records, pkg.class_names, preds)
        det.close()
        # latency at the package's own thresholds: what the line runs (mAP needs conf 0.001 and many boxes)
        with Detector(pkg, backend=backend, precision=precision, num_threads=thread_budget()) as line_det:
            st = line_det.benchmark(sample, runs=latency_runs, warmup=5)
        latency = {"median_ms": round(st["end_to_end_p50_ms"], 3), "p95_ms": round(st["end_to_end_p95_ms"], 3),
                   "raw_median_ms": round(st["raw_p50_ms"], 3), "runs": latency_runs}
        metrics_by[key] = metrics
        results[key] = {**metrics.to_dict(), "latency": latency}
        log.info("%s: mAP50 %.4f  mAP50:95 %.4f  latency %.2f ms", key, metrics.map50, metrics.map50_95,
                 latency["median_ms"])
    if not results:
        raise BackendError(f"{package}: no model of the requested backends {backends} could run")
    primary = "openvino/fp32" if "openvino/fp32" in results else next(iter(results))
    summary: dict[str, Any] = {k: results[primary][k] for k in ("map50", "map50_95", "per_class_ap50",
                                                                 "per_class_ap50_95", "num_images")}
    summary.update(primary=primary, models=results, parameters=pkg.meta.model.parameters,
                   gflops=pkg.meta.model.gflops, dataset=str(data), subset=subset if split_file else "all")
    if "openvino/int8" in results and "openvino/fp32" in results:
        fp32, int8 = results["openvino/fp32"], results["openvino/int8"]
        summary["int8_vs_fp32"] = {
            "map50_delta": round(int8["map50"] - fp32["map50"], 5),
            "map50_95_delta": round(int8["map50_95"] - fp32["map50_95"], 5),
            "latency_ratio": round(int8["latency"]["median_ms"] / fp32["latency"]["median_ms"], 3)}
    (out_dir / "metrics.json").write_text(json.dumps(_json_safe(summary), indent=1))
    curves = save_pr_curves(metrics_by[primary], out_dir / "pr", title=primary)
    np.savez(out_dir / "pr_curves.npz", **metrics_by[primary].pr_curves)  # precision at 101 recall points
    (out_dir / "report.md").write_text(render_report(pkg.meta, summary, curves, out_dir))
    return summary


def render_report(meta: PackageMetadata, summary: dict[str, Any], curves: list[Path], out_dir: Path) -> str:
    model = meta.model
    lines = [f"# Evaluation: {model.name} ({model.size})", "",
             f"- dataset: `{summary['dataset']}` ({summary['subset']}, {summary['num_images']} images)",
             f"- task: {meta.task}, input {meta.input.size[0]} px, {len(meta.class_names)} classes",
             f"- parameters: {model.parameters / 1e6:.3f} M, GFLOPs per image: {model.gflops:.3f}",
             f"- primary model: {summary['primary']}", "",
             "| model | mAP50 | mAP50:95 | latency median (ms) | p95 (ms) |", "|---|---|---|---|---|"]
    for key, res in summary["models"].items():
        lines.append(f"| {key} | {res['map50']:.4f} | {res['map50_95']:.4f} | {res['latency']['median_ms']:.2f} | "
                     f"{res['latency']['p95_ms']:.2f} |")
    if "int8_vs_fp32" in summary:
        d = summary["int8_vs_fp32"]
        lines += ["", f"INT8 vs FP32 (OpenVINO, same run): mAP50:95 {d['map50_95_delta']:+.4f}, "
                      f"mAP50 {d['map50_delta']:+.4f}, latency ratio {d['latency_ratio']:.3f}"]
    lines += ["", "Latency: end-to-end `Detector.__call__` on one dataset image (letterbox, inference, decode, NMS)",
              "at the package's default thresholds, single stream, measured on this machine in this run.", "",
              "## Per-class AP (primary model)", "", "| class | AP50 | AP50:95 |", "|---|---|---|"]
    def fmt(v: float | None) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

    for name in meta.class_names:
        lines.append(f"| {name} | {fmt(summary['per_class_ap50'].get(name))} | "
                     f"{fmt(summary['per_class_ap50_95'].get(name))} |")
    lines += ["", "## Precision-recall curves (IoU 0.5)", ""]
    lines += [f"![{p.stem}]({p.relative_to(out_dir).as_posix()})" for p in curves]
    return "\n".join(lines) + "\n"

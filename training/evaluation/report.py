"""Stage ``report``: the one markdown report of a run.

The report compares, on the validation split and in one process: the baseline (student architecture trained
alone, OpenVINO FP32 through the SDK), the teacher (torch, with its DDPM features; it cannot ship, so it has
no OpenVINO latency), the distilled student (OpenVINO FP32 through the SDK) and its INT8 model. Columns:
mAP50, mAP50:95, per-class AP50, parameters, GFLOPs, latency; plus PR-curve and latency plots and the wall
time of every stage.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.evaluation.metrics import DetectionMetrics, evaluate_detections
from training.evaluation.package_eval import evaluate_package
from training.evaluation.torch_predict import predict_records
from training.pipeline.context import RunContext, dataset_path, feature_source, load_split

CALIBRATION_RECALL = 0.9  # the report's OK / NG section: thresholds that find 90% of each class's defects


def _fmt(v: float | None, digits: int = 4) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def teacher_predictions(ctx, records: list):
    """The run's best teacher's predictions on ``records`` (torch, kernels, DDPM features looked up by id).

    Returns (predictions, teacher, feature source, input size)."""
    from training.teacher.feature_source import with_features
    from training.teacher.model import load_teacher

    teacher, meta = load_teacher(ctx.stage_dir("teacher") / "weights" / "best.safetensors")
    source = feature_source(ctx)
    size = int(meta["input_size"])
    return predict_records(teacher, records, size, forward=with_features(source)), teacher, source, size


def evaluate_teacher(ctx, records: list, class_names: list[str]):
    """The run's best teacher on ``records``: (metrics, teacher, feature source, input size)."""
    preds, teacher, source, size = teacher_predictions(ctx, records)
    return evaluate_detections(records, class_names, preds), teacher, source, size


def teacher_metrics(ctx, val_records: list, class_names: list[str]) -> tuple[DetectionMetrics, dict[str, Any]]:
    """The teacher on the validation images (torch, kernels), plus its size, GFLOPs and torch CPU latency."""
    from torch.utils.flop_counter import FlopCounterMode

    metrics, teacher, source, size = evaluate_teacher(ctx, val_records, class_names)
    x = torch.zeros(1, 3, size, size)
    feats = source([val_records[0].image_id])
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        teacher(x, feats)
    with torch.no_grad():
        for _ in range(3):
            teacher(x, feats)
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            teacher(x, feats)
            times.append((time.perf_counter() - t0) * 1e3)
    info = {"parameters": sum(p.numel() for p in teacher.parameters()), "gflops": counter.get_total_flops() / 1e9,
            "torch_latency_ms": float(np.median(times))}
    return metrics, info


def _mean_pr(metrics_per_class: dict[str, np.ndarray]) -> np.ndarray | None:
    curves = [c for c in metrics_per_class.values() if c is not None and len(c)]
    return np.mean(curves, axis=0) if curves else None


def _plots(out: Path, pr: dict[str, np.ndarray | None], latency: dict[str, float]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 5))
    recall = np.linspace(0, 1, 101)
    for name, curve in pr.items():
        if curve is not None:
            ax.plot(recall, curve, label=name)
    ax.set(xlabel="recall", ylabel="precision (mean over classes)", xlim=(0, 1), ylim=(0, 1.02),
           title="PR @ IoU 0.5, validation split")
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(out / "pr_models.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(latency)
    ax.barh(names, [latency[n] for n in names], color="tab:blue")
    for i, n in enumerate(names):
        ax.text(latency[n], i, f" {latency[n]:.2f} ms", va="center")
    ax.set(xlabel="end-to-end latency per frame, median (ms)", title="latency on this machine (same run)")
    ax.set_xlim(0, max(latency.values()) * 1.35)
    paths.append(out / "latency.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
    return paths


def write_report(ctx: RunContext, stage_names: list[str]) -> dict[str, Any]:
    """Write ``RUN/report/report.md`` (+ summary.json, plots); ``stage_names`` orders the wall-time table."""

    out = ctx.stage_dir("report")
    out.mkdir(parents=True, exist_ok=True)
    _, val = load_split(ctx)
    split = ctx.stage_dir("data") / "split.json"
    data = dataset_path(ctx)
    student = evaluate_package(ctx.stage_dir("package"), data, out / "student", split_file=split, subset="val",
                               backends=("openvino",), latency_runs=50, compute_precisions=("bf16",))
    baseline = evaluate_package(ctx.stage_dir("export") / "baseline-package", data, out / "baseline",
                                split_file=split, subset="val", backends=("openvino",), latency_runs=50)
    t_metrics, t_info = teacher_metrics(ctx, val.records, val.class_names)
    rows: dict[str, dict[str, Any]] = {}
    pr: dict[str, np.ndarray | None] = {}

    def add(name: str, res: dict[str, Any], params: int, gflops: float, latency: float | None, runtime: str) -> None:
        rows[name] = {"map50": res["map50"], "map50_95": res["map50_95"], "per_class_ap50": res["per_class_ap50"],
                      "parameters": params, "gflops": gflops, "latency_ms": latency, "runtime": runtime}

    b = baseline["models"]["openvino/fp32"]
    add("baseline", b, baseline["parameters"], baseline["gflops"], b["latency"]["median_ms"], "OpenVINO FP32")
    add("teacher", t_metrics.to_dict(), t_info["parameters"], t_info["gflops"], None, "torch (needs DDPM features)")
    s = student["models"]["openvino/fp32"]
    add("student", s, student["parameters"], student["gflops"], s["latency"]["median_ms"], "OpenVINO FP32")
    if "openvino/int8" in student["models"]:
        q = student["models"]["openvino/int8"]
        add("student INT8", q, student["parameters"], student["gflops"], q["latency"]["median_ms"], "OpenVINO INT8")
    if "openvino/bf16" in student["models"]:  # CPUs with bf16 arithmetic only
        h = student["models"]["openvino/bf16"]
        add("student bf16", h, student["parameters"], student["gflops"], h["latency"]["median_ms"],
            "OpenVINO FP32 model, bf16 arithmetic")
    from training.evaluation.calibration import calibrate_package

    calibration = calibrate_package(ctx.stage_dir("package"), data, "target_recall", CALIBRATION_RECALL,
                                    split_file=split, subset="val", write=False)
    pr["teacher"] = _mean_pr(t_metrics.pr_curves)
    plots = _plots(out, pr | _package_pr(out), {k: v["latency_ms"] for k, v in rows.items() if v["latency_ms"]})
    stage_times = {}
    for name in stage_names:
        marker = ctx.stage_dir(name) / "stage.json"
        if marker.is_file():
            stage_times[name] = json.loads(marker.read_text()).get("seconds")
    resvae = _stage_result(ctx, "resvae")
    summary = {"models": rows, "teacher_torch_latency_ms": round(t_info["torch_latency_ms"], 3),
               "calibration": calibration,
               "stage_seconds": stage_times, "num_val_images": len(val.records), "resvae": resvae,
               "gain_student_vs_baseline": {"map50": rows["student"]["map50"] - rows["baseline"]["map50"],
                                            "map50_95": rows["student"]["map50_95"] - rows["baseline"]["map50_95"]}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    (out / "report.md").write_text(render(ctx, summary, val.class_names, plots))
    return {"report": str(out / "report.md"), "package": str(ctx.stage_dir("package")),
            **{f"{k} mAP50": round(v["map50"], 4) for k, v in rows.items()},
            **{f"{k} mAP50:95": round(v["map50_95"], 4) for k, v in rows.items()}}


def _package_pr(out: Path) -> dict[str, np.ndarray | None]:
    """Mean PR curves of the SDK evaluations, recomputed from their metrics (student and baseline)."""
    curves = {}
    for name in ("baseline", "student"):
        path = out / name / "pr_curves.npz"
        if path.is_file():
            with np.load(path) as z:
                curves[name] = _mean_pr({k: z[k] for k in z.files})
    return curves


def _stage_result(ctx, name: str) -> dict[str, Any]:
    marker = ctx.stage_dir(name) / "stage.json"
    return json.loads(marker.read_text())["result"] if marker.is_file() else {}


def render(ctx, summary: dict[str, Any], class_names: list[str], plots: list[Path]) -> str:
    rows = summary["models"]
    cfg = ctx.config
    lines = [f"# {cfg.name}: baseline, teacher and distilled student", "",
             f"Validation split: {summary['num_val_images']} images. Detector size `{cfg.model.size}`, input "
             f"{cfg.model.input_size} px. Latency: median end-to-end `Detector(frame)` (letterbox, inference, "
             "decode, NMS) on one validation image, single stream, on this machine in this run.", "",
             "| model | mAP50 | mAP50:95 | parameters | GFLOPs | latency (ms) | runtime |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['map50']:.4f} | {r['map50_95']:.4f} | {r['parameters'] / 1e6:.3f} M | "
                     f"{r['gflops']:.3f} | {_fmt(r['latency_ms'], 2)} | {r['runtime']} |")
    g = summary["gain_student_vs_baseline"]
    lines += ["", f"Student vs baseline: mAP50 {g['map50']:+.4f}, mAP50:95 {g['map50_95']:+.4f} (same architecture, "
                  "schedule and seed). The teacher's forward (detector + fusion, DDPM features looked up) takes "
                  f"{summary['teacher_torch_latency_ms']:.2f} ms in torch on this CPU, before the DDPM passes that "
                  "make its features; it never ships.", "",
              "## Per-class AP50", "", "| class | " + " | ".join(rows) + " |", "|---|" + "---:|" * len(rows)]
    for c in class_names:
        lines.append(f"| {c} | " + " | ".join(_fmt(r["per_class_ap50"].get(c)) for r in rows.values()) + " |")
    cal = summary.get("calibration")
    if cal:
        from training.evaluation.calibration import render as render_calibration

        lines += ["", "## OK / NG at calibrated thresholds (student, OpenVINO FP32)", "",
                  f"Per-class thresholds picked for recall {cal['target']} on the validation split and measured on the "
                  "same images, so the figures are optimistic; `python -m training calibrate` writes thresholds "
                  "picked on a set of your own into the package.", "", render_calibration(cal).rstrip()]
    rv = summary.get("resvae") or {}
    if rv.get("enabled"):
        lines += ["", "## Feature repository", "",
                  f"ResVAE latents {rv['latent_shape']} fp16: {rv['compression_vs_fp32']}x smaller than the raw fp32 "
                  f"features; decoded vs raw cosine similarity on validation images {rv['val_cosine']:.4f} "
                  f"({rv['val_cosine_standardized']:.4f} on per-channel standardised features)."]
    lines += ["", "## Stage wall time (s)", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {_fmt(v, 1)} |" for k, v in summary["stage_seconds"].items()]
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    samples = ctx.stage_dir("ddpm") / "samples.png"
    if samples.is_file():
        lines += ["", f"DDPM samples: `{samples}`"]
    return "\n".join(lines) + "\n"

"""Export a trained run into a model package: OpenVINO IR (FP32 exact, FP16 optional, INT8 by NNCF) and
ONNX (dynamo exporter, single file), with self-describing metadata; signed when a key is given.

The OpenVINO and ONNX graphs take the letterboxed BGR uint8 canvas (N, S, S, 3) directly: conversion to float,
BGR->RGB, normalisation and NHWC->NCHW are embedded (PrePostProcessor for OpenVINO, nodes prepended to the ONNX
graph), so the runtime hands over the canvas as it is (and a GPU runtime copies 4x fewer bytes to the device).
The metadata lists, per file, the steps the runtime must do. No torch program goes in a package: it would be a
pickle, and the SDK never unpickles anything from a package (docs/sdk.md).
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import openvino as ov
import torch
from onnx import helper, numpy_helper
from openvino.preprocess import ColorFormat, PrePostProcessor
from tqdm import tqdm

from diffdefect_edge import __version__
from diffdefect_edge.package import ModelPackage, write_package
from diffdefect_edge.preprocess import MEAN, PAD_VALUE, STD, letterbox, normalize_nchw
from training.data import load_dataset
from training.data.torch_dataset import read_image
from training.detector import STRIDES, DeployModel, count_gflops, count_parameters
from training.detector.checkpoint import load_detector
from training.engine.checkpoint import CheckpointError
from training.engine.threads import apply_thread_budget

log = logging.getLogger(__name__)

LETTERBOX_RULE = ("scale = min(S / width, S / height); resize bilinear to (round(width * scale), "
                  "round(height * scale)); paste centred, offset ((S - new_w) // 2, (S - new_h) // 2), on an "
                  "S x S canvas filled with pad_value")
CANVAS_INPUT = {"dtype": "uint8", "layout": "NHWC", "color_order": "BGR", "normalized": False}
CANVAS_STEPS = ("letterbox",)


def find_checkpoint(run_dir: Path, weights: str = "best") -> Path:
    for name in ([weights] if weights == "last" else [weights, "last"]):
        path = run_dir / "weights" / f"{name}.safetensors"
        if path.is_file():
            return path
    raise CheckpointError(f"{run_dir}: no weights/{weights}.safetensors (is this a training run directory?)")


def calibration_canvases(run_dir: Path, count: int, input_size: int, data_override: str | Path | None = None
                         ) -> np.ndarray:
    """Letterboxed BGR canvases (N, S, S, 3) of up to ``count`` training images of the run."""
    info = json.loads((run_dir / "dataset.json").read_text())
    root = data_override or info.get("path")
    if root is None or not Path(root).exists():
        raise FileNotFoundError(f"{run_dir}/dataset.json: training data {root} not found; pass the dataset "
                                "folder for INT8 calibration")
    dataset = load_dataset(root, format=info.get("format", "auto"), class_names=info["class_names"],
                           on_error="skip")
    train_ids = set(info["train"])
    records = [r for r in dataset.records if r.image_id in train_ids] or dataset.records
    step = max(1, len(records) // count)
    picked = records[::step][:count]
    return np.stack([letterbox(read_image(str(r.image_path)), input_size)[0]
                     for r in tqdm(picked, desc="export: calibration images", leave=False, mininterval=1.0)])


def pick_sample_image(run_dir: Path, data_override: str | Path | None = None) -> Path | None:
    """A real image of the run's validation split (else training) for the package's benchmarks; None when the
    run's data is not at hand."""
    info = json.loads((run_dir / "dataset.json").read_text()) if (run_dir / "dataset.json").is_file() else {}
    root = data_override or info.get("path")
    if root is None or not Path(root).exists():
        return None
    dataset = load_dataset(root, format=info.get("format", "auto"), class_names=info.get("class_names"),
                           on_error="skip")
    wanted = info.get("val") or info.get("train") or []
    by_id = {r.image_id: r for r in dataset.records}
    for image_id in wanted:
        rec = by_id.get(image_id)
        if rec is not None and len(rec.boxes):  # one with a defect: the postprocessing is timed too
            return Path(rec.image_path)
    return Path(dataset.records[0].image_path) if dataset.records else None


def embed_preprocessing(model: ov.Model) -> ov.Model:
    """Make the IR take the letterboxed BGR uint8 NHWC canvas (exact: cast, channel swap, scale)."""
    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.BGR)
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    steps = ppp.input().preprocess().convert_element_type(ov.Type.f32).convert_color(ColorFormat.RGB)
    if any(MEAN):
        steps.mean(list(MEAN))
    steps.scale(list(STD))
    return ppp.build()


def onnx_with_canvas_input(model: onnx.ModelProto) -> onnx.ModelProto:
    """The ONNX graph with the preprocessing of :func:`embed_preprocessing` prepended: its input becomes the
    letterboxed BGR uint8 canvas (N, S, S, 3), cast to float, NHWC -> NCHW, BGR -> RGB, ``(x - mean) / std``."""
    model = copy.deepcopy(model)
    graph = model.graph
    old = graph.input[0]
    dims = old.type.tensor_type.shape.dim
    batch = dims[0].dim_param or dims[0].dim_value
    height, width = dims[2].dim_value, dims[3].dim_value
    name, normalized = old.name, old.name + "_normalized"
    for node in graph.node:  # the float graph now reads the normalised tensor the new nodes make
        node.input[:] = [normalized if i == name else i for i in node.input]
    graph.initializer.extend([
        numpy_helper.from_array(np.array([2, 1, 0], np.int64), name + "_bgr_to_rgb"),
        numpy_helper.from_array(np.asarray(MEAN, np.float32).reshape(1, 3, 1, 1), name + "_mean"),
        numpy_helper.from_array(np.asarray(STD, np.float32).reshape(1, 3, 1, 1), name + "_std")])
    steps = [
        helper.make_node("Cast", [name], [name + "_float"], to=onnx.TensorProto.FLOAT),
        helper.make_node("Transpose", [name + "_float"], [name + "_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Gather", [name + "_nchw", name + "_bgr_to_rgb"], [name + "_rgb"], axis=1),
        helper.make_node("Sub", [name + "_rgb", name + "_mean"], [name + "_centred"]),
        helper.make_node("Div", [name + "_centred", name + "_std"], [normalized])]
    for i, node in enumerate(steps):
        graph.node.insert(i, node)
    graph.input.remove(old)
    graph.input.insert(0, helper.make_tensor_value_info(name, onnx.TensorProto.UINT8, [batch, height, width, 3]))
    onnx.checker.check_model(model)
    return model


def output_convolutions(model: ov.Model) -> list[str]:
    """Names of the convolutions that produce the raw head outputs (conv -> bias Add -> Reshape/Result)."""
    def consumers(op):
        return [t.get_node() for out in op.outputs() for t in out.get_target_inputs()]

    return [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "Convolution"
            and any(c.get_type_name() == "Add" and any(cc.get_type_name() in ("Reshape", "Result") for cc in consumers(c))
                    for c in consumers(op))]


def quantize_int8(model: ov.Model, canvases: np.ndarray) -> ov.Model:
    """NNCF post-training INT8 quantization calibrated on the training canvases.

    The head's output convolutions stay in float: the class logits and box bins are where quantization error
    costs the most accuracy (docs/perf/ has the comparison).
    """
    import nncf

    data = nncf.Dataset(list(canvases), lambda c: normalize_nchw(c[None], list(MEAN), list(STD)))
    keep_float = output_convolutions(model)
    return nncf.quantize(model, data, preset=nncf.QuantizationPreset.MIXED, subset_size=len(canvases),
                         ignored_scope=nncf.IgnoredScope(names=keep_float, validate=False))


def _dynamic_batch() -> dict[str, dict[int, torch.export.Dim]]:
    """The exported programs take any batch size (the example input has 2: batch 1 would be specialised)."""
    return {"x": {0: torch.export.Dim("batch", min=1, max=256)}}


def export_onnx(deploy: DeployModel, example: torch.Tensor, path: Path, output_names: list[str]) -> None:
    for noisy in ("onnxscript", "onnx_ir"):  # their INFO logs list every rewrite
        logging.getLogger(noisy).setLevel(logging.WARNING)
    program = torch.onnx.export(deploy, (example,), dynamo=True, input_names=["images"], output_names=output_names,
                                dynamic_shapes=_dynamic_batch(), verbose=False)
    program.save(str(path), external_data=False)


def _finite_or_null(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None: package metadata is strict JSON (no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def export_package(run_dir: str | Path, out: str | Path, int8: bool = True, fp16: bool = False,
                   weights: str = "best", calibration_images: int = 200, calib_data: str | Path | None = None,
                   conf: float | None = None, iou: float | None = None, overwrite: bool = False,
                   sign_key: str | Path | None = None) -> ModelPackage:
    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    apply_thread_budget("export")
    ckpt = find_checkpoint(run_dir, weights)
    detector, meta = load_detector(ckpt)
    input_size = int(meta["input_size"])
    export_cfg = meta.get("config", {}).get("export", {})
    conf = conf if conf is not None else export_cfg.get("conf", 0.25)
    iou = iou if iou is not None else export_cfg.get("iou", 0.5)
    deploy = DeployModel(detector, input_size).eval()
    example = torch.zeros(2, 3, input_size, input_size)
    seg = detector.spec.seg_head
    output_names = ["detections", "segmentation"] if seg else ["detections"]
    num_anchors = sum((input_size // s) ** 2 for s in STRIDES)

    with tempfile.TemporaryDirectory(prefix="dde-export-") as tmp_s:
        tmp = Path(tmp_s)
        files: dict[str, Path] = {}
        models: list[dict[str, Any]] = []

        def add(backend: str, precision: str, rel: str, src: Path, input_: dict, steps: tuple[str, ...],
                extra: dict[str, Path] | None = None) -> None:
            files[rel] = src
            for k, v in (extra or {}).items():
                files[k] = v
            models.append({"backend": backend, "precision": precision, "file": rel, "extra_files": list(extra or {}),
                           "input": input_, "runtime_steps": list(steps)})

        log.info("export: ONNX")
        onnx_path = tmp / "model_float_input.onnx"  # converted to OpenVINO below; the package's file takes canvases
        export_onnx(deploy, example, onnx_path, output_names)
        canvas_onnx = tmp / "model.onnx"
        onnx.save(onnx_with_canvas_input(onnx.load(str(onnx_path))), str(canvas_onnx))
        add("onnx", "fp32", "model.onnx", canvas_onnx, CANVAS_INPUT, CANVAS_STEPS)

        log.info("export: OpenVINO IR")
        float_model = embed_preprocessing(ov.convert_model(str(onnx_path)))
        # FP16 is the same graph with its weights compressed when saved (after the exact FP32 copy is written)
        variants = [("fp32", float_model, False)] + ([("fp16", float_model, True)] if fp16 else [])
        if int8:
            canvases = calibration_canvases(run_dir, calibration_images, input_size, calib_data)
            log.info("export: INT8 quantization on %d calibration images", len(canvases))
            quantized = quantize_int8(ov.convert_model(str(onnx_path)), canvases)
            variants.append(("int8", embed_preprocessing(quantized), False))
        for precision, model, compress in variants:
            xml = tmp / "openvino" / f"model_{precision}.xml"
            xml.parent.mkdir(exist_ok=True)
            ov.save_model(model, str(xml), compress_to_fp16=compress)
            add("openvino", precision, f"openvino/model_{precision}.xml", xml, CANVAS_INPUT, CANVAS_STEPS,
                {f"openvino/model_{precision}.bin": xml.with_suffix(".bin")})

        sample = pick_sample_image(run_dir, calib_data)
        if sample is not None:
            files[f"sample{sample.suffix.lower()}"] = sample
        dataset_info = json.loads((run_dir / "dataset.json").read_text()) if (run_dir / "dataset.json").is_file() else {}
        metadata = {
            "model": {"name": meta.get("config", {}).get("name", run_dir.name), "architecture": "DefectDetector",
                      "size": detector.spec.size, "parameters": count_parameters(detector),
                      "gflops": round(count_gflops(detector, input_size), 4), "reg_max": detector.spec.reg_max},
            "task": "detect+seg" if seg else "detect",
            "class_names": list(meta["class_names"]),
            "input": {"size": [input_size, input_size], "color_order": "RGB", "layout": "NCHW",
                      "mean": list(MEAN), "std": list(STD),
                      "letterbox": {"rule": LETTERBOX_RULE, "pad_value": PAD_VALUE, "interpolation": "bilinear"}},
            "output": {
                "detections": {"name": "detections", "shape": ["N", num_anchors, 4 + len(meta["class_names"])],
                               "boxes": "xyxy, canvas pixels", "scores": "per-class probability (sigmoid applied)"},
                "segmentation": ({"name": "segmentation", "shape": ["N", len(meta["class_names"]) + 1,
                                                                     input_size // 8, input_size // 8],
                                  "values": "logits, channel 0 = background"} if seg else None),
                "strides": list(STRIDES), "num_anchors": num_anchors,
                "decode": "threshold per class at conf, class-aware NMS at iou, boxes mapped back through the letterbox"},
            "defaults": {"conf": conf, "iou": iou, "max_det": 300},
            "models": models,
            **({"sample_image": f"sample{sample.suffix.lower()}"} if sample is not None else {}),
            "provenance": {
                "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "sdk_version": __version__, "torch_version": torch.__version__, "openvino_version": ov.__version__,
                "run_dir": str(run_dir.resolve()), "checkpoint": ckpt.name, "epoch": meta.get("epoch"),
                "dataset": {k: dataset_info.get(k) for k in ("path", "format")} | {
                    "num_train": len(dataset_info.get("train", [])), "num_val": len(dataset_info.get("val", []))},
                "metrics_at_export": _finite_or_null(meta.get("metrics")), "config": meta.get("config")},
        }
        return write_package(out, files, metadata, overwrite=overwrite, sign_key=sign_key)

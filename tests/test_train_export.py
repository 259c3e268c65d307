"""Training runs, checkpoints, resume, DDP, export, backend parity and the evaluation report."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import openvino as ov
import pytest
import torch

import diffdefect_edge
from diffdefect_edge import Detector, load_package
from diffdefect_edge.postprocess import box_iou
from training.cli import main
from training.config import load_config
from training.data import load_dataset, split_dataset
from training.detector.checkpoint import load_detector
from training.detector.trainer import Trainer
from training.engine.checkpoint import CheckpointError, read_meta
from training.engine.resume import RunExistsError
from training.evaluation.torch_predict import predict_records

REPO = Path(__file__).resolve().parents[1]


def _images(dataset: Path, n: int = 6) -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in sorted((dataset / "JPEGImages").iterdir())[:n]]


def test_run_directory_holds_safetensors_csv_and_summary(tiny_run: Path):
    weights = tiny_run / "weights"
    assert {p.name for p in weights.iterdir()} == {"best.safetensors", "last.safetensors", "last_state.pt"}
    meta = read_meta(weights / "best.safetensors")
    assert meta["spec"]["size"] == "n" and meta["input_size"] == 96 and meta["config"]["name"] == "tiny"
    assert meta["spec"]["seg_head"] is True  # synthetic data has masks and seg_head is auto
    rows = list(csv.DictReader((tiny_run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 31))
    assert all(float(r["loss"]) > 0 for r in rows)
    assert [int(r["epoch"]) for r in rows if r["map50"] != ""] == [10, 20, 30]  # eval_every: 10
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["world_size"] == 1 and summary["epochs"] == 30 and summary["seconds_per_epoch"] > 0
    state = torch.load(weights / "last_state.pt", weights_only=True)  # plain tensors and numbers only
    assert state["epoch"] == 29


def test_checkpoint_rebuilds_the_model_without_pickle(tiny_run: Path, tmp_path: Path):
    model, meta = load_detector(tiny_run / "weights" / "best.safetensors")
    assert model.spec.num_classes == len(meta["class_names"]) == 6
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_detector(bad)


def test_resume_continues_from_the_last_epoch(tiny_run: Path, tiny_config_path: Path, tiny_dataset: Path,
                                              tmp_path: Path):
    run = tmp_path / "resumed"
    shutil.copytree(tiny_run, run)
    config = load_config(tiny_config_path)
    config.train.epochs = 31
    dataset = load_dataset(tiny_dataset)
    train, val = split_dataset(dataset, config.data.val_fraction, seed=config.seed)
    result = Trainer(config, train, val, run, resume=True).fit()
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 32))
    assert result.epochs == 31
    assert torch.load(run / "weights" / "last_state.pt", weights_only=True)["epoch"] == 30


def test_train_refuses_to_overwrite_a_run_without_resume(tiny_run: Path, tiny_config_path: Path,
                                                         tiny_dataset: Path, tmp_path: Path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    before = (run / "weights" / "best.safetensors").read_bytes()
    code = main(["train", "--config", str(tiny_config_path), "--data", str(tiny_dataset), "--out", str(run)])
    assert code == 2 and "--resume" in capsys.readouterr().err
    assert (run / "weights" / "best.safetensors").read_bytes() == before
    with pytest.raises(RunExistsError, match="different config"):
        config = load_config(tiny_config_path)
        config.model.size = "s"
        dataset = load_dataset(tiny_dataset)
        Trainer(config, dataset, dataset, run, resume=True).fit()


def test_package_metadata_describes_the_model(tiny_package: Path):
    pkg = load_package(tiny_package)
    meta = pkg.metadata
    assert meta["task"] == "detect+seg" and pkg.input_size == 96 and len(pkg.class_names) == 6
    assert {(m.backend, m.precision) for m in pkg.models} == {
        ("openvino", "fp32"), ("openvino", "fp16"), ("openvino", "int8"), ("onnx", "fp32")}
    assert not (tiny_package / "model.pt2").exists()  # no pickle in a package
    assert meta["created_by"] == f"diffdefect-edge {diffdefect_edge.__version__}" and meta["format_version"] == 2
    assert meta["input"]["letterbox"]["pad_value"] == 114 and meta["input"]["color_order"] == "RGB"
    assert meta["output"]["strides"] == [8, 16, 32] and meta["output"]["num_anchors"] == 144 + 36 + 9
    assert meta["defaults"]["conf"] == 0.05
    assert meta["model"]["parameters"] > 1e6 and meta["model"]["gflops"] > 0
    assert meta["provenance"]["dataset"]["num_train"] == 12 and meta["provenance"]["config"]["name"] == "tiny"
    ov_fp32 = pkg.model_file("openvino", "fp32")
    assert ov_fp32.runtime_steps == ("letterbox",) and ov_fp32.input["dtype"] == "uint8"
    assert set(meta["files"]) == {p.relative_to(tiny_package).as_posix() for p in tiny_package.rglob("*")
                                  if p.is_file() and p.name != "metadata.json"}


def test_onnx_is_one_file_taking_canvases_and_openvino_fp32_keeps_fp32_weights(tiny_package: Path):
    model = onnx.load(str(tiny_package / "model.onnx"), load_external_data=False)
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    images = model.graph.input[0].type.tensor_type  # takes the canvas as it is, like the OpenVINO IR
    assert images.elem_type == onnx.TensorProto.UINT8 and [d.dim_value for d in images.shape.dim[1:]] == [96, 96, 3]
    assert not list(tiny_package.glob("*.data"))
    core = ov.Core()
    fp32 = core.read_model(str(tiny_package / "openvino" / "model_fp32.xml"))
    const_types = {op.get_output_element_type(0).get_type_name() for op in fp32.get_ops() if op.get_type_name() == "Constant"}
    assert "f16" not in const_types
    fp16 = core.read_model(str(tiny_package / "openvino" / "model_fp16.xml"))
    assert "f16" in {op.get_output_element_type(0).get_type_name() for op in fp16.get_ops()
                     if op.get_type_name() == "Constant"}
    inp = fp32.input(0)
    assert inp.get_element_type().get_type_name() == "u8" and list(inp.get_partial_shape()[1:].to_shape()) == [96, 96, 3]


def _match(a, b) -> tuple[float, float]:
    """Worst IoU and worst score difference between two equal-length detection sets, matched by IoU."""
    assert len(a) == len(b), f"{len(a)} vs {len(b)} detections"
    if not len(a):
        return 1.0, 0.0
    iou = box_iou(a.xyxy, b.xyxy) * (a.class_ids[:, None] == b.class_ids[None, :])  # same class only
    j = iou.argmax(1)
    return float(iou[np.arange(len(a)), j].min()), float(np.abs(a.scores - b.scores[j]).max())


def test_openvino_and_onnxruntime_agree(tiny_package: Path, tiny_dataset: Path):
    """The two runtimes on the same package; agreement with the torch model is the test below."""
    frames = _images(tiny_dataset)
    results = {}
    for backend in ("openvino", "onnxruntime"):
        with Detector(tiny_package, backend=backend, conf=0.02) as det:
            results[backend] = [det(f) for f in frames]
    assert sum(len(d) for d in results["openvino"]) > 0, "the tiny model should detect something at conf 0.02"
    for backend in ("onnxruntime",):
        for ref, other in zip(results["openvino"], results[backend]):
            worst_iou, worst_score = _match(ref, other)
            assert worst_iou >= 0.99 and worst_score <= 1e-3, backend


def test_detector_matches_the_training_side_prediction(tiny_run: Path, tiny_package: Path, tiny_dataset: Path):
    model, meta = load_detector(tiny_run / "weights" / "best.safetensors")
    records = load_dataset(tiny_dataset).records[:4]
    torch_preds = predict_records(model, records, meta["input_size"], conf=0.02, iou=0.5)
    # the training side evaluates multi-label (as mAP protocols do); the SDK does so on request
    with Detector(tiny_package, conf=0.02, iou=0.5, multi_label=True) as det:
        for i, rec in enumerate(records):
            dets = det(cv2.imread(str(rec.image_path)))
            mine = [p for p in torch_preds if p.image_index == i]
            assert len(mine) == len(dets)
            if mine:
                boxes = np.array([p.box for p in mine], np.float32)
                assert box_iou(boxes, dets.xyxy).max(1).min() >= 0.99


# How far the reduced-precision models' raw outputs may sit from FP32's on the same canvases: the 99th percentile
# of the per-class probability differences (absolute; INT8 moves a few anchors by up to 0.3), and for FP16 the
# median box difference in canvas pixels over the anchors FP32 scores above 0.05. Measured on the tiny model: FP16
# 0.0014 and 0.03 px (Intel VM), INT8 0.03 to 0.08. The INT8 boxes of this barely trained model are checked where
# a user meets them, as detections: its raw anchor boxes moved by a median 0.64 px on an Intel VM but 7 px on an
# AMD one (the tiny model's flat box-bin distributions amplify quantization error), while 13 of its 20 FP32
# detections still had an INT8 twin there.
PRECISION_TOLERANCE = {"fp16": {"prob": 0.005, "box_px": 0.1}, "int8": {"prob": 0.1}}
INT8_MATCHED = 0.5  # the share of FP32 detections (conf 0.25) with an INT8 one of the same class at IoU >= 0.5


def test_int8_and_fp16_models_run_and_stay_close(tiny_package: Path, tiny_dataset: Path):
    frames = _images(tiny_dataset, 8)
    with Detector(tiny_package, precision="fp32") as ref_det:
        canvases = np.stack([ref_det.prepare(f)[0] for f in frames[:4]])
        ref, _ = ref_det.backend.infer(canvases)
        ref_dets = [ref_det(f, conf=0.25) for f in frames]
    confident = ref[..., 4:].max(-1) > 0.05
    assert confident.any() and sum(len(d) for d in ref_dets) >= 5
    for precision, tol in PRECISION_TOLERANCE.items():
        with Detector(tiny_package, precision=precision, conf=0.02) as det:
            out, _ = det.backend.infer(canvases)
            dets = [det(f, conf=0.1) for f in frames]
        assert all(d.xyxy.dtype == np.float32 and len(d.scores) == len(d) for d in dets)
        assert out.shape == ref.shape
        prob_err = float(np.quantile(np.abs(out[..., 4:] - ref[..., 4:]), 0.99))
        assert prob_err <= tol["prob"], (precision, prob_err)
        if "box_px" in tol:
            box_err = float(np.median(np.abs(out[..., :4] - ref[..., :4])[confident]))
            assert box_err <= tol["box_px"], (precision, box_err)
        matched = sum(int(((box_iou(r.xyxy, d.xyxy) * (r.class_ids[:, None] == d.class_ids[None])) >= 0.5)
                          .any(1).sum()) for r, d in zip(ref_dets, dets) if len(r) and len(d))
        share = matched / sum(len(r) for r in ref_dets)
        assert share >= (1.0 if precision == "fp16" else INT8_MATCHED), (precision, share)


def test_eval_command_writes_metrics_and_report(tiny_package: Path, tiny_dataset: Path, tiny_run: Path,
                                                tmp_path: Path):
    split = tmp_path / "split.json"
    info = json.loads((tiny_run / "dataset.json").read_text())
    split.write_text(json.dumps({"val": info["val"]}))
    out = tmp_path / "report"
    assert main(["eval", "--package", str(tiny_package), "--data", str(tiny_dataset), "--out", str(out),
                 "--split", str(split), "--latency-runs", "3"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 4 and 0 <= metrics["map50"] <= 1 and 0 <= metrics["map50_95"] <= metrics["map50"]
    assert set(metrics["per_class_ap50"]) == set(load_package(tiny_package).class_names)
    assert {"openvino/fp32", "openvino/int8", "openvino/fp16", "onnxruntime/fp32"} <= set(metrics["models"])
    assert metrics["int8_vs_fp32"]["latency_ratio"] > 0
    report = (out / "report.md").read_text()
    assert "GFLOPs" in report and "openvino/int8" in report
    for line in report.splitlines():
        if line.startswith("!["):
            assert (out / line.split("(")[1].rstrip(")")).is_file()


def test_export_refuses_a_directory_that_is_not_a_run(tmp_path: Path, capsys):
    assert main(["export", "--run", str(tmp_path), "--out", str(tmp_path / "pkg")]) == 2
    assert "weights/best.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "pkg").exists()


def test_torchrun_trains_with_two_processes(tiny_config_path: Path, tiny_dataset: Path, tmp_path: Path):
    run = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "training",
           "train", "--config", str(tiny_config_path), "--data", str(tiny_dataset), "--out", str(run), "--epochs", "1"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2
    checks = summary["param_checksum_per_rank"]
    assert len(checks) == 2 and checks[0] == pytest.approx(checks[1], rel=0, abs=1e-9)  # DDP kept replicas equal
    assert (run / "weights" / "best.safetensors").is_file()

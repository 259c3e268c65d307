"""Model packages: atomic writing, verification, and refusal of corrupt, tampered or unknown packages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from diffdefect_edge.package import FORMAT_VERSION, PackageError, load_package, write_package

# what an export writes, for a two-class 64 px model with one ONNX file
META = {"task": "detect", "class_names": ["a", "b"],
        "model": {"name": "t", "architecture": "DefectDetector", "size": "n", "parameters": 10, "gflops": 0.1},
        "input": {"size": [64, 64], "color_order": "RGB", "layout": "NCHW", "mean": [0.0, 0.0, 0.0],
                  "std": [255.0, 255.0, 255.0], "letterbox": {"pad_value": 114, "interpolation": "bilinear"}},
        "output": {"detections": {"name": "detections", "shape": ["N", 84, 6]}, "strides": [8, 16, 32],
                   "num_anchors": 84},
        "defaults": {"conf": 0.25, "iou": 0.5},
        "models": [{"backend": "onnx", "precision": "fp32", "file": "model.onnx",
                    "input": {"dtype": "uint8", "layout": "NHWC", "color_order": "BGR", "normalized": False},
                    "runtime_steps": ["letterbox"]}]}


@pytest.fixture
def package(tmp_path: Path) -> Path:
    src = tmp_path / "src.bin"
    src.write_bytes(b"weights" * 100)
    write_package(tmp_path / "pkg", {"model.onnx": src}, META)
    return tmp_path / "pkg"


def test_written_package_loads_with_checksums(package: Path):
    pkg = load_package(package)
    meta = json.loads((package / "metadata.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["files"]["model.onnx"]["bytes"] == 700
    assert len(meta["files"]["model.onnx"]["sha256"]) == 64
    assert pkg.class_names == ["a", "b"] and pkg.input_size == 64
    assert pkg.model_file("onnx", "fp32").path == package / "model.onnx"
    with pytest.raises(PackageError, match="no openvino model in int8"):
        pkg.model_file("openvino", "int8")
    assert not [p for p in package.parent.iterdir() if p.name.startswith(".pkg")]  # no temp dir left


def test_existing_package_is_not_overwritten_by_default(package: Path, tmp_path: Path):
    with pytest.raises(FileExistsError, match="already exists"):
        write_package(package, {"model.onnx": tmp_path / "src.bin"}, META)
    assert load_package(package)  # untouched


def test_failed_write_leaves_the_old_package_intact(package: Path, tmp_path: Path):
    before = (package / "metadata.json").read_text()
    with pytest.raises(FileNotFoundError):
        write_package(package, {"model.onnx": tmp_path / "missing.bin"}, META, overwrite=True)
    assert (package / "metadata.json").read_text() == before


@pytest.mark.parametrize("damage,message", [
    (lambda p: (p / "model.onnx").write_bytes(b"weights" * 99 + b"xxxxxxx"), "sha256"),
    (lambda p: (p / "model.onnx").write_bytes(b"weights" * 50), "truncated"),
    (lambda p: (p / "model.onnx").unlink(), "missing"),
    (lambda p: (p / "metadata.json").write_text("{not json"), "broken JSON"),
    (lambda p: (p / "metadata.json").unlink(), "not a model package"),
])
def test_damaged_packages_are_refused(package: Path, damage, message):
    damage(package)
    with pytest.raises(PackageError, match=message):
        load_package(package)


def test_unknown_format_version_is_refused(package: Path):
    meta = json.loads((package / "metadata.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    (package / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(PackageError, match="version"):
        load_package(package)


def test_missing_directory_is_refused(tmp_path: Path):
    with pytest.raises(PackageError, match="no such package"):
        load_package(tmp_path / "nope")


@pytest.mark.parametrize("path, value, field", [
    (("input", "letterbox", "pad_value"), "114", "input.letterbox.pad_value"),
    (("defaults", "conf"), True, "defaults.conf"),
    (("models", 0, "runtime_steps"), "letterbox", "models[0].runtime_steps"),
    (("class_names",), [1, 2], "class_names[0]"),
    (("input", "size"), [64], "input.size"),
])
def test_a_wrongly_typed_field_is_named(package: Path, path, value, field):
    meta = json.loads((package / "metadata.json").read_text())
    target = meta
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    (package / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(PackageError, match=re.escape(field)):
        load_package(package)

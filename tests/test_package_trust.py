"""Packages the line can trust: nothing in a package runs, every path stays inside it, one schema, signatures.

Each test doctors a copy of the tiny exported package the way someone handing a line a bad package would.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffdefect_edge import Detector, PackageError, load_package
from diffdefect_edge.backends import BackendError
from diffdefect_edge.cli import main as sdk_main
from diffdefect_edge.metadata import FORMAT_VERSION, MetadataError, parse_metadata
from diffdefect_edge.package import sha256_file


@pytest.fixture
def pkg(tiny_package: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "pkg"
    shutil.copytree(tiny_package, copy)
    return copy


def _meta(pkg: Path) -> dict:
    return json.loads((pkg / "metadata.json").read_text())


def _write(pkg: Path, meta: dict) -> None:
    (pkg / "metadata.json").write_text(json.dumps(meta))


def _list_file(meta: dict, pkg: Path, rel: str, target: Path | None = None) -> None:
    target = target or pkg / rel
    meta["files"][rel] = {"sha256": sha256_file(target), "bytes": target.stat().st_size}


class _Payload:
    """Unpickling this makes a directory: the trace a code-execution payload would leave."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


# ---------------------------------------------------------------------------------------------- nothing runs

def test_a_pickle_in_a_package_never_runs(pkg: Path, tmp_path: Path, tiny_dataset: Path, capsys):
    marker = tmp_path / "payload-ran"
    (pkg / "model.pt2").write_bytes(pickle.dumps(_Payload(marker)))
    meta = _meta(pkg)
    _list_file(meta, pkg, "model.pt2")
    meta["models"].append({"backend": "torch", "precision": "fp32", "file": "model.pt2", "extra_files": [],
                           "input": {"dtype": "float32", "layout": "NCHW", "color_order": "RGB", "normalized": True},
                           "runtime_steps": ["letterbox"]})
    _write(pkg, meta)
    with pytest.raises(PackageError, match=r"models\[\d\]\.backend"):  # the schema has no torch backend
        load_package(pkg)
    for backend in ("auto", "openvino", "onnxruntime", "torch"):
        with pytest.raises((PackageError, ValueError)):
            Detector(pkg, backend=backend)
    assert sdk_main(["bench", str(pkg), "--runs", "2"]) == 2
    assert sdk_main(["run", "--model", str(pkg), "--source", str(tiny_dataset / "JPEGImages"), "--max-frames",
                     "1"]) == 2
    assert sdk_main(["info", str(pkg)]) == 2
    assert "Traceback" not in capsys.readouterr().err
    # listed only as a file (no model entry), the pickle is checked and never opened as a model
    meta["models"] = [m for m in meta["models"] if m["backend"] != "torch"]
    _write(pkg, meta)
    with Detector(pkg) as det:
        assert det.backend.name == "openvino"
    with pytest.raises(ValueError, match="no torch backend"):
        Detector(pkg, backend="torch")
    assert not marker.exists()


def test_a_format_1_package_is_migrated_without_its_torch_program(pkg: Path):
    meta = _meta(pkg)
    meta["format_version"] = 1
    del meta["created_by"]
    meta["models"].append({"backend": "torch", "precision": "fp32", "file": "model.onnx", "extra_files": [],
                           "input": {"dtype": "float32", "layout": "NCHW", "color_order": "RGB", "normalized": True},
                           "runtime_steps": ["letterbox"]})
    _write(pkg, meta)
    loaded = load_package(pkg)
    assert loaded.meta.format_version == FORMAT_VERSION and loaded.meta.created_by == "diffdefect-edge 0.1.0"
    assert "torch" not in {m.backend for m in loaded.models}


def test_a_newer_format_names_the_release_that_reads_it(pkg: Path):
    meta = _meta(pkg)
    meta["format_version"] = FORMAT_VERSION + 1
    meta["created_by"] = "diffdefect-edge 9.1.0"
    _write(pkg, meta)
    with pytest.raises(PackageError, match=r"written by diffdefect-edge 9\.1\.0.*reads format versions up to"):
        load_package(pkg)


# ---------------------------------------------------------------------------------------------- paths

@pytest.mark.parametrize("rel", ["/etc/passwd", "../outside/model.onnx", "openvino/../../x.onnx", "./model.onnx",
                                 "openvino//model_fp32.xml", "C:\\model.onnx", ""])
def test_paths_outside_or_not_normalised_are_refused(pkg: Path, tmp_path: Path, rel: str):
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    shutil.copy(pkg / "model.onnx", outside / "model.onnx")
    meta = _meta(pkg)
    meta["models"][0]["file"] = rel
    meta["files"][rel] = meta["files"]["model.onnx"]
    _write(pkg, meta)
    with pytest.raises(PackageError, match="metadata (files|models)"):
        load_package(pkg)


def test_links_and_special_files_are_refused_and_nothing_outside_is_described(pkg: Path, tmp_path: Path):
    secret = tmp_path / "secret.bin"
    shutil.copy(pkg / "openvino" / "model_fp32.bin", secret)
    (pkg / "openvino" / "model_fp32.bin").unlink()
    (pkg / "openvino" / "model_fp32.bin").symlink_to(secret)  # same content: the checksum matches
    with pytest.raises(PackageError, match="model_fp32.bin: is a symbolic link") as info:
        load_package(pkg)
    assert str(secret) not in str(info.value) and str(secret.stat().st_size) not in str(info.value)


def test_a_linked_metadata_file_or_folder_is_refused(pkg: Path, tmp_path: Path):
    moved = tmp_path / "ov"
    shutil.move(str(pkg / "openvino"), moved)
    (pkg / "openvino").symlink_to(moved, target_is_directory=True)
    with pytest.raises(PackageError, match="openvino: is a symbolic link"):
        load_package(pkg)
    (pkg / "openvino").unlink()
    shutil.move(str(moved), pkg / "openvino")
    shutil.move(str(pkg / "metadata.json"), tmp_path / "metadata.json")
    (pkg / "metadata.json").symlink_to(tmp_path / "metadata.json")
    with pytest.raises(PackageError, match="metadata.json: is a symbolic link"):
        load_package(pkg)


def test_a_fifo_is_refused_without_blocking(pkg: Path):
    meta = _meta(pkg)
    os.mkfifo(pkg / "pipe.bin")
    meta["files"]["pipe.bin"] = {"sha256": "0" * 64, "bytes": 0}
    _write(pkg, meta)
    with pytest.raises(PackageError, match="pipe.bin: is not a regular file"):
        load_package(pkg)


def test_a_wrong_checksum_names_only_the_package_file(pkg: Path):
    meta = _meta(pkg)
    meta["files"]["model.onnx"]["bytes"] += 1
    _write(pkg, meta)
    with pytest.raises(PackageError, match=r"model.onnx: is \d+ bytes, the package says"):
        load_package(pkg)


# ---------------------------------------------------------------------------------------------- schema

def _set(meta: dict, path: tuple, value) -> dict:
    target = meta
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return meta


_DELETE = object()
BAD_FIELDS = [
    (("files",), [], "files"),
    (("files", "model.onnx", "bytes"), _DELETE, "bytes"),
    (("models",), {}, "models"),
    (("models", 0, "file"), _DELETE, "models[0].file"),
    (("models", 0, "runtime_steps"), _DELETE, "models[0].runtime_steps"),
    (("input",), {}, "input"),
    (("defaults",), {}, "defaults"),
    (("input", "std"), [0, 0, 0], "input.std"),
    (("input", "letterbox", "pad_value"), 999, "input.letterbox.pad_value"),
    (("input", "size"), [0, 0], "input.size"),
    (("class_names",), "abcdef", "class_names"),
    (("class_names",), ["a", "b"], "class_names"),
    (("defaults", "conf"), -1, "defaults.conf"),
    (("defaults", "conf"), 5.0, "defaults.conf"),
    (("defaults", "iou"), 0, "defaults.iou"),
    (("defaults", "max_det"), -5, "defaults.max_det"),
    (("format_version",), True, "format_version"),
    (("format_version",), 1.0, "format_version"),
    (("task",), "classify", "task"),
    (("unknown_key",), 1, "unknown_key"),
]


@pytest.mark.parametrize("path, value, field", BAD_FIELDS)
def test_each_malformed_field_is_a_package_error_naming_it(pkg: Path, path, value, field, capsys):
    _write(pkg, _set(_meta(pkg), path, value))
    with pytest.raises(PackageError, match=field.replace("[", r"\[").replace("]", r"\]")):
        load_package(pkg)
    assert sdk_main(["info", str(pkg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_input_size_must_match_the_model_files(pkg: Path, tmp_path: Path):
    meta = _meta(pkg)
    meta["input"]["size"] = [320, 320]
    _write(pkg, meta)
    for backend in ("openvino", "onnxruntime"):
        with pytest.raises(BackendError, match=r"takes 96x96 canvases, the package's input.size says 320x320"):
            Detector(pkg, backend=backend)


def test_class_count_must_match_the_model_files(pkg: Path):
    meta = _meta(pkg)
    meta["class_names"] = meta["class_names"][:2]
    meta["output"]["detections"]["shape"][-1] = 6
    meta["output"]["segmentation"]["shape"][1] = 3
    _write(pkg, meta)
    for backend in ("openvino", "onnxruntime"):
        with pytest.raises(BackendError, match="outputs 6 classes, the package's class_names lists 2"):
            Detector(pkg, backend=backend)


def test_deep_nesting_nan_and_duplicate_keys(pkg: Path):
    deep = b'{"provenance": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(MetadataError, match="nests 100001 levels deep"):
        parse_metadata(deep)
    (pkg / "metadata.json").write_bytes(deep)
    with pytest.raises(PackageError, match="nests"):
        load_package(pkg)
    with pytest.raises(MetadataError, match="NaN is not a JSON number"):
        parse_metadata(b'{"a": NaN}')
    with pytest.raises(MetadataError, match="appears twice"):
        parse_metadata(b'{"a": 1, "a": 2}')


def test_a_truncated_ir_keeps_openvinos_whole_explanation(pkg: Path):
    xml = pkg / "openvino" / "model_fp32.xml"
    xml.write_bytes(xml.read_bytes()[: xml.stat().st_size // 2])
    meta = _meta(pkg)
    _list_file(meta, pkg, "openvino/model_fp32.xml")
    _write(pkg, meta)
    with pytest.raises(BackendError, match="OpenVINO could not read it") as info:
        Detector(pkg, backend="openvino")
    assert "at offset" in str(info.value)  # the useful part, after OpenVINO's first line


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                                      max_size=4), max_leaves=20)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_metadata_only_ever_raises_package_error(tiny_package: Path, tmp_path_factory, data):
    """Random values at every key of a real metadata.json, random structures and random bytes."""
    original = json.loads((tiny_package / "metadata.json").read_text())
    pkg = tmp_path_factory.mktemp("fuzz")
    kind = data.draw(st.sampled_from(["replace", "structure", "bytes"]))
    if kind == "replace":
        meta = json.loads(json.dumps(original))
        paths = list(_paths(meta))[1:]
        for path in data.draw(st.lists(st.sampled_from(paths), min_size=1, max_size=3)):
            try:
                _set(meta, path, data.draw(JSON))
            except (KeyError, IndexError, TypeError):  # an earlier replacement removed this path
                pass
        blob = json.dumps(meta).encode()
    elif kind == "structure":
        blob = json.dumps(data.draw(JSON)).encode()
    else:
        blob = data.draw(st.binary(max_size=200))
    (pkg / "metadata.json").write_bytes(blob)
    try:
        load_package(pkg, verify=False)
    except PackageError:
        pass


# ---------------------------------------------------------------------------------------------- signatures

def _keys(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """An ECDSA P-256 key pair made by openssl, as a user would."""
    key, pub = tmp_path / f"{name}.pem", tmp_path / f"{name}.pub.pem"
    if shutil.which("openssl"):
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)],
                       check=True, capture_output=True)
        subprocess.run(["openssl", "ec", "-in", str(key), "-pubout", "-out", str(pub)], check=True,
                       capture_output=True)
    else:  # the same PEM formats, from the library
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        private = ec.generate_private_key(ec.SECP256R1())
        key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        pub.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, pub


def test_sign_verify_and_trusted_keys(pkg: Path, tmp_path: Path, capsys):
    key, pub = _keys(tmp_path, "line")
    _, other_pub = _keys(tmp_path, "other")
    with pytest.raises(PackageError, match="is not signed"):
        Detector(pkg, trusted_keys=[pub])
    assert sdk_main(["verify", str(pkg), "--key", str(pub)]) == 2
    assert sdk_main(["sign", str(pkg), "--key", str(key)]) == 0
    assert sdk_main(["verify", str(pkg), "--key", str(pub)]) == 0
    assert sdk_main(["verify", str(pkg), "--key", str(other_pub)]) == 2
    assert sdk_main(["verify", str(pkg), "--key", str(other_pub), "--key", str(pub)]) == 0
    with Detector(pkg, trusted_keys=[pub]) as det:
        assert det.package.signed_by
    with pytest.raises(PackageError, match="does not verify with any trusted key"):
        Detector(pkg, trusted_keys=[other_pub])
    # raising conf (or renaming a class) is a change to metadata.json: the signature no longer holds
    meta = _meta(pkg)
    meta["defaults"]["conf"] = 0.95
    _write(pkg, meta)
    assert load_package(pkg).meta.defaults.conf == 0.95  # without trusted keys, only the schema is checked
    with pytest.raises(PackageError, match="does not verify"):
        load_package(pkg, trusted_keys=[pub])
    assert sdk_main(["verify", str(pkg), "--key", str(pub)]) == 2
    err = capsys.readouterr().err
    assert "does not verify" in err and "Traceback" not in err


def test_a_changed_model_file_breaks_a_signed_package(pkg: Path, tmp_path: Path):
    key, pub = _keys(tmp_path, "line")
    assert sdk_main(["sign", str(pkg), "--key", str(key)]) == 0
    onnx = pkg / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\0")
    with pytest.raises(PackageError, match="model.onnx: sha256 does not match"):
        load_package(pkg, trusted_keys=[pub])


def test_export_signs_with_sign(tiny_run: Path, tmp_path: Path):
    from training.cli import main

    key, pub = _keys(tmp_path, "line")
    out = tmp_path / "signed"
    assert main(["export", "--run", str(tiny_run), "--out", str(out), "--sign", str(key)]) == 0
    assert load_package(out, trusted_keys=[pub]).signed_by
    assert sdk_main(["verify", str(out), "--key", str(pub)]) == 0

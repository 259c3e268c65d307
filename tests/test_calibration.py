"""OK / NG: per-class thresholds calibrated on a labelled set, written into the package, used by the verdict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tiny_synthetic
from test_package_trust import _keys

from diffdefect_edge import Detector, PackageError, load_package
from diffdefect_edge.cli import main as sdk_main
from training.cli import main


@pytest.fixture
def pkg(tiny_package: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "pkg"
    shutil.copytree(tiny_package, copy)
    return copy


@pytest.fixture(scope="module")
def with_clean_images(tmp_path_factory) -> Path:
    return write_tiny_synthetic(tmp_path_factory.mktemp("calib") / "synthetic", seed=3, background_fraction=0.5)


def test_target_recall_writes_thresholds_that_the_verdict_uses(pkg: Path, tiny_dataset: Path, tmp_path: Path,
                                                               capsys):
    out = tmp_path / "calibration.md"
    assert main(["calibrate", "--package", str(pkg), "--data", str(tiny_dataset), "--target-recall", "0.5",
                 "--out", str(out)]) == 0
    meta = load_package(pkg).meta
    thresholds = meta.calibration.thresholds
    assert set(thresholds) == set(meta.class_names) and meta.calibration.rule == "target_recall"
    assert meta.defaults.conf == pytest.approx(min(min(thresholds.values()), 0.05))
    table = out.read_text()
    assert "| class | threshold | precision | recall |" in table
    for name, t in thresholds.items():
        assert f"| {name} | {t:.3f} |" in table
    with Detector(pkg) as det:
        image = sorted((tiny_dataset / "JPEGImages").iterdir())[0]
        d = det(image)
        expected_ng = any(s >= thresholds[n] for _, s, _, n in d)
        assert d.verdict.status == ("NG" if expected_ng else "OK")
        if expected_ng:
            assert any(">=" in r for r in d.verdict.reasons)
        assert json.loads(d.to_json())["verdict"]["status"] == d.verdict.status
        blank = det(np.zeros((100, 100, 3), np.uint8))
        assert blank.verdict.status == "NOT_INSPECTED" and "underexposed" in blank.verdict.reasons[0]


def test_max_false_alarm_bounds_the_defect_free_images_called_ng(pkg: Path, with_clean_images: Path, capsys):
    from training.evaluation.calibration import calibrate_package

    summary = calibrate_package(pkg, with_clean_images, "max_false_alarm", 0.25, write=False)
    assert summary["defect_free_images"] > 0
    assert summary["false_alarm_rate"] <= 0.25
    assert load_package(pkg).meta.calibration is None  # a dry run writes nothing



def test_max_false_alarm_needs_defect_free_images():
    from training.evaluation.calibration import ClassScores, pick_thresholds

    with pytest.raises(ValueError, match="defect-free images"):
        pick_thresholds({"a": ClassScores([0.5], [0.5], [True], [])}, "max_false_alarm", 0.1)
    with pytest.raises(ValueError, match="target in"):
        pick_thresholds({}, "target_recall", 1.5)


def test_a_signed_package_is_signed_again_or_left_alone(pkg: Path, tiny_dataset: Path, tmp_path: Path, capsys):
    key, pub = _keys(tmp_path, "line")
    assert sdk_main(["sign", str(pkg), "--key", str(key)]) == 0
    before = (pkg / "metadata.json").read_bytes()
    args = ["calibrate", "--package", str(pkg), "--data", str(tiny_dataset), "--target-recall", "0.5"]
    assert main(args) == 2
    assert "signing key" in capsys.readouterr().err
    assert (pkg / "metadata.json").read_bytes() == before  # nothing changed
    assert main(args + ["--sign", str(key)]) == 0
    assert load_package(pkg, trusted_keys=[pub]).meta.calibration is not None


def test_calibration_must_name_known_classes(pkg: Path):
    meta = json.loads((pkg / "metadata.json").read_text())
    meta["calibration"] = {"thresholds": {"dent": 0.5}, "rule": "target_recall", "target": 0.9, "images": 4,
                           "defect_free_images": 0}
    (pkg / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(PackageError, match="calibration.thresholds names classes"):
        load_package(pkg)

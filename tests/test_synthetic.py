"""The synthetic steel generator: determinism, mask/box agreement, contrast, and its command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO

from training.data import CLASS_NAMES, SynthConfig, load_dataset, synthesize_image, write_synthetic_dataset


def test_same_seed_same_images_and_index_independent_of_count():
    a = synthesize_image(SynthConfig(num_images=5, seed=3), 4)
    b = synthesize_image(SynthConfig(num_images=500, seed=3), 4)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    c = synthesize_image(SynthConfig(seed=4), 4)
    assert not np.array_equal(a.image, c.image)


def test_masks_agree_with_boxes():
    config = SynthConfig(seed=1, max_defects=4, background_fraction=0.0)
    seen = set()
    for i in range(40):
        item = synthesize_image(config, i)
        assert len(item.boxes) >= 1
        for (x1, y1, x2, y2), cls in zip(item.boxes.astype(int), item.class_ids):
            seen.add(int(cls))
            inside = item.mask[y1:y2, x1:x2] == cls + 1
            # the box is the tight bounding box of its mask pixels: each border row/column touches the mask
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        # every mask pixel belongs to some box of its class
        for cls in np.unique(item.mask[item.mask > 0]):
            ys, xs = np.nonzero(item.mask == cls)
            covered = np.zeros(len(ys), bool)
            for (x1, y1, x2, y2), c in zip(item.boxes, item.class_ids):
                if c + 1 == cls:
                    covered |= (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
            assert covered.all()
    assert seen == set(range(len(CLASS_NAMES)))


def _defect_strength(contrast: float) -> float:
    config = SynthConfig(seed=7, contrast=(contrast, contrast), background_fraction=0.0)
    deltas = []
    for i in range(10):
        item = synthesize_image(config, i)
        blurred = cv2.GaussianBlur(item.image.astype(np.float32), (0, 0), 6)
        on = item.mask > 0
        deltas.append(np.abs(item.image[on] - blurred[on]).mean())
    return float(np.mean(deltas))


def test_contrast_knob_makes_faint_defects_fainter():
    assert _defect_strength(0.15) < 0.5 * _defect_strength(1.0)


def test_background_fraction_gives_defect_free_images():
    items = [synthesize_image(SynthConfig(seed=0, background_fraction=1.0), i) for i in range(3)]
    assert all(len(it.boxes) == 0 and not it.mask.any() for it in items)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="contrast"):
        SynthConfig(contrast=(0.5, 0.2))
    with pytest.raises(ValueError, match="size"):
        SynthConfig(size=10)


def test_written_folder_round_trips_through_voc_loader(tmp_path: Path):
    out = write_synthetic_dataset(tmp_path / "syn", SynthConfig(num_images=12, seed=2))
    ds = load_dataset(out)
    assert ds.class_names == CLASS_NAMES and len(ds) == 12
    for i, rec in enumerate(ds.records):
        item = synthesize_image(SynthConfig(num_images=12, seed=2), i)
        np.testing.assert_array_equal(rec.boxes, item.boxes)
        np.testing.assert_array_equal(rec.class_ids, item.class_ids)
        np.testing.assert_array_equal(cv2.imread(str(rec.mask_path), cv2.IMREAD_UNCHANGED), item.mask)
    meta = json.loads((out / "synth.json").read_text())
    assert meta["config"]["seed"] == 2 and len(meta["images"]) == 12


def test_existing_output_is_not_overwritten(tmp_path: Path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not empty"):
        write_synthetic_dataset(out, SynthConfig(num_images=2))
    assert (out / "notes.txt").read_text() == "user data"


def test_cli_synth_then_stats_json(tmp_path: Path):
    out = tmp_path / "cli"
    run = lambda *a: subprocess.run([sys.executable, "-m", "training", *a], capture_output=True, text=True,  # noqa: E731
                                    cwd=REPO, timeout=120)
    proc = run("data", "synth", "--out", str(out), "--num-images", "10", "--seed", "5", "--contrast", "0.2", "0.9")
    assert proc.returncode == 0, proc.stderr
    proc = run("data", "stats", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["num_images"] == 10
    assert stats["classes"] == CLASS_NAMES
    assert sum(stats["boxes_per_class"].values()) == stats["num_boxes"]
    expected = sum(len(synthesize_image(SynthConfig(num_images=10, seed=5, contrast=(0.2, 0.9)), i).boxes)
                   for i in range(10))
    assert stats["num_boxes"] == expected
    proc = run("data", "stats", str(tmp_path / "missing"), "--json")
    assert proc.returncode == 2 and "does not exist" in proc.stderr

"""The SDK at a real line: one box per defect, bounded masks, sliced inference, camera health, conveniences."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from diffdefect_edge import Detections, Detector
from diffdefect_edge.health import HealthBounds, measure
from diffdefect_edge.postprocess import box_iou


@pytest.fixture(scope="module")
def det(tiny_package: Path):
    with Detector(tiny_package, conf=0.05) as d:
        yield d


def _gt_box(tiny_dataset: Path, index: int = 0) -> np.ndarray:
    import xml.etree.ElementTree as ET

    xml = sorted((tiny_dataset / "Annotations").iterdir())[index]
    obj = ET.parse(xml).getroot().find("object/bndbox")
    return np.array([float(obj.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")], np.float32)


def test_one_box_per_defect_by_default(tiny_package: Path, frames):
    with Detector(tiny_package, conf=0.02) as one, Detector(tiny_package, conf=0.02, multi_label=True) as multi, \
            Detector(tiny_package, conf=0.02, agnostic_nms=True) as agnostic:
        counts = [(len(multi(f)), len(one(f)), len(agnostic(f))) for f in frames]
    # multi-label reports a box once per class above conf; by default each anchor keeps its best class; class-
    # agnostic NMS also merges boxes of different classes (decode_detections' own tests check the rules exactly)
    assert all(m >= d >= a for m, d, a in counts)
    assert sum(m for m, _, _ in counts) > sum(d for _, d, _ in counts)


def test_calls_on_paths_lists_and_per_call_settings(det: Detector, frames, tiny_dataset: Path):
    path = sorted((tiny_dataset / "JPEGImages").iterdir())[0]
    ref = det(frames[0])
    assert det(path) == ref and det(str(path)) == ref
    batch = det([frames[0], path, frames[1]])
    assert isinstance(batch, list) and len(batch) == 3 and batch[0] == ref and batch[1] == ref
    strict = det(frames[0], conf=0.9)
    assert len(strict) <= len(ref) and all(s > 0.9 for s in strict.scores)
    assert det.conf == 0.05  # a per-call setting does not stick
    assert len(det(frames[0], max_det=1)) <= 1
    assert det.class_names == list(det.names) and len(det.class_names) == 6
    assert set(ref.speed) == {"preprocess", "inference", "postprocess"} and all(v >= 0 for v in ref.speed.values())


@pytest.mark.parametrize("kwargs, message", [({"conf": 0}, "conf must be a number in"), ({"conf": 1.5}, "conf"),
                                             ({"conf": True}, "conf"), ({"iou": -1}, "iou"),
                                             ({"max_det": -5}, "max_det must be a positive integer"),
                                             ({"max_det": 0}, "max_det"), ({"tile": 8}, "tile must be"),
                                             ({"tile_overlap": 0.95}, "tile_overlap"), ({"health": "on"}, "health")])
def test_settings_are_validated(tiny_package: Path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Detector(tiny_package, **kwargs)


def test_per_call_settings_are_validated(det: Detector, frames):
    for kwargs in ({"conf": -0.1}, {"iou": 2}, {"max_det": -5}):
        with pytest.raises(ValueError, match="must be"):
            det(frames[0], **kwargs)


def test_detections_compare_print_summarise_and_round_trip(det: Detector, frames):
    d = det(frames[0])
    assert d == det(frames[0]) and d != d[[]] and (d == "boxes") is False
    text = repr(d)
    assert text.startswith(f"Detections({len(d)} boxes") and len(text) < 200
    summary = d.summary()
    assert summary["count"] == len(d) and sum(summary["per_class"].values()) == len(d)
    again = Detections.from_json(d.to_json(), names=d.names)
    assert again == Detections(np.round(d.xyxy, 2), np.round(d.scores, 5), d.class_ids, d.names)
    coco = d.to_coco(image_id=7)
    assert len(coco) == len(d) and all(r["image_id"] == 7 and len(r["bbox"]) == 4 for r in coco)
    if len(d):
        x1, y1, x2, y2 = d.xyxy[0]
        assert coco[0]["bbox"][2] == pytest.approx(x2 - x1, abs=0.02)
    with pytest.raises(ValueError, match="detections"):
        Detections.from_json('{"boxes": []}')


def test_json_is_strict(det: Detector, frames):
    d = det(frames[0])
    d.meta["nan"] = float("nan")
    data = json.loads(d.to_json())  # no NaN token: the standard parser's strict mode accepts it
    assert data["meta"]["nan"] is None
    json.loads(d.to_json(), parse_constant=lambda name: pytest.fail(f"{name} in JSON"))


def test_supervision_round_trip(det: Detector, frames):
    sv = pytest.importorskip("supervision")
    d = det(frames[0], masks=True)
    s = d.to_supervision()
    assert isinstance(s, sv.Detections) and len(s) == len(d)
    assert list(s.data["class_name"]) == d.class_names
    back = Detections.from_supervision(s, names=d.names)
    assert back == Detections(d.xyxy, d.scores, d.class_ids, d.names)


def test_masks_only_when_asked_and_bounded(tiny_package: Path, frames):
    with Detector(tiny_package, conf=0.02) as plain:
        d = plain(cv2.resize(frames[0], (1280, 720)))
        assert d.box_masks is None and d.masks is None
        with pytest.raises(ValueError, match="no masks"):
            d.mask(0)
    with Detector(tiny_package, conf=0.02, masks=True) as with_masks:
        big = cv2.resize(frames[0], (1280, 720))
        d = with_masks(big)
        assert len(d) > 0 and d.box_masks is not None and d.masks is None
        size = with_masks.input_size
        assert all(c.shape[0] <= size and c.shape[1] <= size for c in d.box_masks.crops)  # model resolution
        full = d.mask(0)
        assert full.shape == (720, 1280) and full.dtype == bool
        x1, y1, x2, y2 = d.xyxy[0]
        ys, xs = np.nonzero(full)
        if len(xs):  # the mask lies inside its box
            assert xs.min() >= np.floor(x1) and xs.max() < np.ceil(x2) and ys.min() >= np.floor(y1)
        assert d[[0]].box_masks is not None and len(d[[0]].box_masks) == 1
        assert with_masks(big, masks=False).box_masks is None


def test_draw_on_any_frame_size_and_bgra(det: Detector, frames):
    d = det(frames[0], conf=0.02, masks=True)
    bgra = np.dstack([frames[0], np.full(frames[0].shape[:2], 255, np.uint8)])
    assert d.draw(bgra).shape == bgra.shape
    small = np.zeros((40, 50, 3), np.uint8)  # another size: boxes are clipped, masks skipped
    assert d.draw(small).shape == small.shape
    assert d.draw(frames[0][:, :, 0]).shape == (*frames[0].shape[:2], 3)
    with pytest.raises(ValueError, match="draw takes"):
        d.draw(np.zeros((4, 4), np.float32))


@pytest.mark.parametrize("value, problem", [(0, "underexposed"), (255, "overexposed"), (128, "no contrast")])
def test_a_capped_or_blinded_camera_is_flagged_not_inspected(tiny_package: Path, value, problem):
    flat = np.full((480, 640, 3), value, np.uint8)
    with Detector(tiny_package, conf=0.001) as d:
        out = d(flat)
        assert len(out) == 0 and out.meta["inspected"] is False
        assert any(problem in p for p in out.meta["health"]["problems"])
        assert d.predict_batch([flat])[0].meta["inspected"] is False
    with Detector(tiny_package, conf=0.001, health=None) as unchecked:
        assert "health" not in unchecked(flat).meta  # the check is off: the frame is inspected


def test_health_statistics():
    rng = np.random.default_rng(0)
    texture = rng.integers(60, 200, (300, 400, 3), dtype=np.uint8)
    sharp = measure(texture, HealthBounds(min_sharpness=10.0))
    blurred = measure(cv2.GaussianBlur(texture, (0, 0), 8), HealthBounds(min_sharpness=10.0))
    assert sharp.ok and 100 < sharp.mean < 160 and sharp.contrast > 20
    assert not blurred.ok and any("blurred" in p for p in blurred.problems) and blurred.sharpness < sharp.sharpness
    with pytest.raises(ValueError, match="min_mean"):
        HealthBounds(min_mean=200, max_mean=100)


def test_tiles_find_a_small_defect_the_full_frame_letterbox_misses(tiny_package: Path, tiny_dataset: Path, frames):
    """A line-scan-like strip 16 images wide: letterboxed whole, the defect shrinks to a few pixels; in tiles of
    the training image's size it is seen at the scale the model learnt."""
    image, box = frames[0], _gt_box(tiny_dataset, 0)
    h, w = image.shape[:2]
    strip = np.tile(np.full_like(image, int(image.mean())), (1, 16, 1))
    x0 = 9 * w  # on a tile origin (tiles of w px, step 0.75 w): one tile is exactly the image
    strip[:, x0:x0 + w] = image
    target = box + np.array([x0, 0, x0, 0], np.float32)
    with Detector(tiny_package, conf=0.25, tile_overlap=0.25) as d:
        whole = d(strip)
        tiled = d(strip, tile=w)
    def found(dets: Detections) -> bool:
        return bool(len(dets)) and float(box_iou(target[None], dets.xyxy).max()) >= 0.5

    assert not found(whole), whole
    assert found(tiled), tiled
    assert tiled.meta["tiles"] >= 16
    assert (tiled.xyxy[:, 2] <= strip.shape[1] + 1).all()


def test_bf16_and_auto_precision(tiny_package: Path, frames):
    import openvino as ov

    has_bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    with Detector(tiny_package, precision="fp32") as f32:
        assert f32.backend.compute == "f32"
        ref, _ = f32.backend.infer(np.stack([f32.prepare(f)[0] for f in frames]))
    with Detector(tiny_package, precision="auto") as auto:
        assert auto.backend.compute == ("bf16" if has_bf16 else "f32")
    if not has_bf16:
        with pytest.raises(Exception, match="needs a CPU with bf16"):
            Detector(tiny_package, precision="bf16")
        return
    with Detector(tiny_package, precision="bf16") as bf16:
        out, _ = bf16.backend.infer(np.stack([bf16.prepare(f)[0] for f in frames]))
    # bf16 keeps 8 bits of mantissa: probabilities within a few hundredths of f32's
    assert float(np.quantile(np.abs(out[..., 4:] - ref[..., 4:]), 0.99)) < 0.05
    with pytest.raises(Exception, match="OpenVINO options"):
        Detector(tiny_package, backend="onnxruntime", precision="bf16")


def test_model_cache_directory(tiny_package: Path, frames, tmp_path: Path):
    cache = tmp_path / "ov-cache"
    with Detector(tiny_package, cache_dir=cache) as first:
        ref = first(frames[0])
    assert any(cache.iterdir())  # the compiled graph was kept
    with Detector(tiny_package, cache_dir=cache) as second:  # loaded from the cache
        assert second(frames[0]) == ref


def test_bench_times_the_packages_sample_image(tiny_package: Path, capsys):
    from diffdefect_edge import load_package
    from diffdefect_edge.cli import main as sdk_main

    meta = load_package(tiny_package).meta
    assert meta.sample_image is not None and meta.sample_image in meta.files
    with Detector(tiny_package) as d:
        sample = d.sample_frame()
        assert sample.shape[:2] != (720, 1280) and sample.std() > 5  # a real frame, not the gray fallback
    assert sdk_main(["bench", str(tiny_package), "--runs", "3", "--modes", "latency", "--backends", "openvino"]) == 0
    assert sdk_main(["bench", str(tiny_package), "--image", "missing.png"]) == 2

"""Letterbox, frame checks, decode and NMS: the steps shared by training, export and the runtime."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from diffdefect_edge.postprocess import batched_nms, box_iou, decode_detections, nms
from diffdefect_edge.preprocess import PAD_VALUE, CanvasWriter, letterbox, normalize_nchw, to_bgr


@pytest.mark.parametrize("h,w", [(720, 1280), (200, 200), (100, 37), (1, 1)])
def test_letterbox_places_the_frame_centred_and_maps_boxes_back(h, w):
    frame = np.full((h, w, 3), 7, np.uint8)
    canvas, lb = letterbox(frame, 192)
    assert canvas.shape == (192, 192, 3)
    new_w, new_h = round(w * lb.scale), round(h * lb.scale)
    assert (canvas[lb.pad_y:lb.pad_y + new_h, lb.pad_x:lb.pad_x + new_w] == 7).all()
    assert (canvas == PAD_VALUE).sum() == (192 * 192 - new_w * new_h) * 3
    boxes = np.array([[0, 0, w, h], [w * 0.25, h * 0.5, w * 0.5, h * 0.75]], np.float32)
    np.testing.assert_allclose(lb.boxes_to_frame(lb.boxes_to_canvas(boxes)), boxes, atol=1e-3)


def test_letterbox_of_gray_and_mask_keeps_the_channel_layout():
    canvas, _ = letterbox(np.zeros((50, 80), np.uint8), 64, pad_value=0)
    assert canvas.shape == (64, 64)


def _reference_letterbox(frame: np.ndarray, size: int, pad_value: int) -> np.ndarray:
    h, w = frame.shape[:2]
    scale = min(size / w, size / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = np.full((size, size) + frame.shape[2:], pad_value, np.uint8)
    resized = frame if (new_w, new_h) == (w, h) else cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = resized.reshape((new_h, new_w) + frame.shape[2:])
    return canvas


def test_canvas_writer_reused_over_frames_equals_a_fresh_letterbox():
    """The camera path keeps one canvas per frame shape and resizes each frame straight into it: every frame's
    canvas must be exactly the letterbox rule's, pad bands included, whatever came before."""
    rng = np.random.default_rng(0)
    writers: dict = {}
    shapes = [(720, 1280, 3), (720, 1280, 3), (300, 120, 3), (720, 1280, 3), (64, 64, 3), (90, 50, 3), (300, 120, 3)]
    for shape in shapes:
        frame = rng.integers(0, 256, shape, dtype=np.uint8)
        writer = writers.setdefault(shape, CanvasWriter(shape, np.uint8, 64))
        canvas = writer.write(frame)
        np.testing.assert_array_equal(canvas, _reference_letterbox(frame, 64, 114))
        assert writer.placement == letterbox(frame, 64)[1]
    for shape in [(50, 80), (50, 80, 1)]:  # one-channel frames into one-channel canvases
        writer = CanvasWriter(shape, np.uint8, 32, pad_value=0)
        for _ in range(2):
            frame = rng.integers(0, 256, shape, dtype=np.uint8)
            np.testing.assert_array_equal(writer.write(frame), _reference_letterbox(frame, 32, 0))
    with pytest.raises(ValueError, match="CanvasWriter takes"):
        writer.write(np.zeros((50, 81, 1), np.uint8))  # another frame size is refused, not written misplaced


def test_boxes_are_clipped_to_the_frame():
    _, lb = letterbox(np.zeros((100, 200, 3), np.uint8), 64)
    out = lb.boxes_to_frame(np.array([[-10, -10, 100, 100]], np.float32))
    assert out.min() >= 0 and out[0, 2] <= 200 and out[0, 3] <= 100


@pytest.mark.parametrize("frame,message", [
    (None, "None"),
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    (np.zeros((10, 10, 3), np.float32), "dtype float32"),
    (np.full((10, 10, 3), np.nan, np.float32), "NaN"),
    (np.zeros((10, 10, 2), np.uint8), "shape"),
    (np.zeros((10, 10, 5), np.uint8), "shape"),
    ([[1, 2]], "list"),
])
def test_bad_frames_raise_value_error_saying_what_was_expected(frame, message):
    with pytest.raises(ValueError, match=message) as info:
        to_bgr(frame)
    assert "expected" in str(info.value)


def test_views_bgra_and_colour_names_in_any_case():
    frame = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    flipped, roi = frame[:, ::-1], frame[5:15, 10:25]
    assert (to_bgr(flipped) == flipped).all() and to_bgr(flipped).flags.c_contiguous  # copied once
    assert (to_bgr(roi) == roi).all()
    bgra = np.dstack([frame, np.full((20, 30), 7, np.uint8)])
    assert (to_bgr(bgra) == frame).all() and (to_bgr(bgra[..., [2, 1, 0, 3]], "RGBA") == frame).all()
    assert (to_bgr(frame[..., ::-1], color="RGB") == frame).all() and (to_bgr(frame, "Bgr") == frame).all()
    with pytest.raises(ValueError, match="color must be one of"):
        to_bgr(frame, color="hsv")


def test_gray_and_rgb_frames_become_bgr():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert (to_bgr(gray) == gray[..., None]).all()
    assert (to_bgr(gray[..., None]) == gray[..., None]).all()
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 255
    assert (to_bgr(rgb, color="rgb")[..., 2] == 255).all()


def test_normalize_matches_the_model_convention():
    canvas = np.zeros((1, 2, 2, 3), np.uint8)
    canvas[..., 0] = 255  # blue in BGR
    x = normalize_nchw(canvas, [0, 0, 0], [255, 255, 255])
    assert x.shape == (1, 3, 2, 2) and x.dtype == np.float32
    assert (x[0, 2] == 1).all() and (x[0, 0] == 0).all()  # blue is the last RGB channel


def test_nms_keeps_the_best_of_overlapping_boxes_per_class():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert batched_nms(boxes, scores, np.array([0, 0, 0, 1]), 0.5).tolist() == [0, 2, 3]


def greedy_nms_reference(boxes, scores, class_ids, iou_threshold):
    """The definition, one kept box at a time: the highest-scored box left (first in input order on ties) is
    kept, and every box of its class with IoU above the threshold is dropped."""
    order = list(np.argsort(-scores, kind="stable"))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        iou = box_iou(boxes[i], boxes[order])[0] if order else np.zeros(0)
        order = [j for j, o in zip(order, iou) if class_ids[j] != class_ids[i] or o <= iou_threshold]
    return keep


@pytest.mark.parametrize("seed", range(12))
def test_batched_nms_matches_the_greedy_definition(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    xy = rng.uniform(0, 150, (n, 2)).astype(np.float32)
    wh = rng.uniform(0, 40, (n, 2)).astype(np.float32)
    wh[rng.random(n) < 0.1] = 0  # boxes with no area
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = rng.random(n).astype(np.float32)
    if seed % 2:
        scores = np.round(scores, 1)  # many equal scores: input order decides
    class_ids = rng.integers(0, 4, n)
    threshold = float(rng.choice([0.3, 0.5, 0.7]))
    assert batched_nms(boxes, scores, class_ids, threshold).tolist() == \
        greedy_nms_reference(boxes, scores, class_ids, threshold)


def test_nms_edge_cases():
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).tolist() == []
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    assert nms(boxes, np.array([np.nan, 0.5, 0.4], np.float32), 0.5).tolist() == [1]  # NaN ranks last
    assert nms(boxes, np.array([0.5, 0.5, 0.5], np.float32), 1.0).tolist() == [0, 1, 2]  # IoU 1 is not above 1
    with pytest.raises(ValueError, match="boxes must have shape"):
        nms(np.zeros((3, 5), np.float32), np.zeros(3, np.float32), 0.5)
    with pytest.raises(ValueError, match="scores"):
        batched_nms(boxes, np.zeros(2, np.float32), np.zeros(3, np.int64), 0.5)


def test_decode_is_multi_label_thresholded_and_capped():
    raw = np.zeros((4, 4 + 2), np.float32)
    raw[:, :4] = [[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [80, 80, 90, 90]]
    raw[0, 4:] = [0.9, 0.8]   # two classes on one anchor
    raw[1, 4] = 0.85          # suppressed by anchor 0 (same class, same box)
    raw[2, 5] = 0.3
    raw[3, 4] = 0.1           # below threshold
    boxes, scores, classes = decode_detections(raw, conf=0.25, iou=0.5, multi_label=True)
    assert scores.tolist() == pytest.approx([0.9, 0.8, 0.3])
    assert classes.tolist() == [0, 1, 1]
    assert decode_detections(raw, 0.25, 0.5, max_det=1)[1].tolist() == pytest.approx([0.9])
    # by default one box per defect: anchor 0 keeps only its best class
    boxes, scores, classes = decode_detections(raw, conf=0.25, iou=0.5)
    assert scores.tolist() == pytest.approx([0.9, 0.3]) and classes.tolist() == [0, 1]
    # class-agnostic NMS: a box of another class on the same spot is suppressed too
    raw[1, 4:] = [0.0, 0.85]
    assert decode_detections(raw, 0.25, 0.5)[2].tolist() == [0, 1, 1]
    assert decode_detections(raw, 0.25, 0.5, agnostic=True)[2].tolist() == [0, 1]
    with pytest.raises(ValueError, match="A, 4 \\+ C"):
        decode_detections(raw[:, :4], 0.25, 0.5)


def _reference_decode(raw, conf, iou, max_candidates, max_det, multi_label=True, agnostic=False):
    """The decode rule in numpy: (anchor, class) pairs above conf in row-major order (each anchor's best class
    unless multi_label), the top max_candidates by (score, earlier pair) kept in that order, then the
    one-box-at-a-time NMS reference (all boxes one class when agnostic)."""
    if multi_label:
        anchors, classes = np.nonzero(raw[:, 4:] > conf)
    else:
        probs = np.where(np.isnan(raw[:, 4:]), -np.inf, raw[:, 4:])
        best = probs.argmax(1)
        anchors = np.nonzero(probs[np.arange(len(raw)), best] > conf)[0]
        classes = best[anchors]
    scores = raw[anchors, 4 + classes]
    if len(scores) > max_candidates:
        top = np.sort(np.lexsort((np.arange(len(scores)), -scores))[:max_candidates])
        anchors, classes, scores = anchors[top], classes[top], scores[top]
    boxes = raw[anchors, :4]
    nms_classes = np.zeros_like(classes) if agnostic else classes
    keep = np.asarray(greedy_nms_reference(boxes, scores, nms_classes, iou), np.int64)[:max_det]
    return boxes[keep], scores[keep], classes[keep]


@pytest.mark.parametrize("multi_label, agnostic", [(True, False), (False, False), (False, True), (True, True)])
@pytest.mark.parametrize("seed", range(8))
def test_decode_equals_the_numpy_rule(seed, multi_label, agnostic):
    rng = np.random.default_rng(seed)
    anchors, classes = int(rng.integers(1, 400)), int(rng.integers(1, 7))
    xy = rng.uniform(0, 150, (anchors, 2)).astype(np.float32)
    raw = np.concatenate([xy, xy + rng.uniform(1, 40, (anchors, 2)).astype(np.float32),
                          rng.random((anchors, classes), dtype=np.float32).round(2)], axis=1)  # rounding: ties
    raw[rng.random(anchors) < 0.05, 4] = np.nan  # a NaN probability is never above conf
    conf, iou = float(rng.choice([0.001, 0.25, 0.6])), float(rng.choice([0.3, 0.5, 0.7]))
    max_candidates, max_det = int(rng.choice([5, 50, 3000])), int(rng.choice([0, 3, 300]))
    got = decode_detections(raw, conf, iou, max_candidates=max_candidates, max_det=max_det, multi_label=multi_label,
                            agnostic=agnostic)
    expected = _reference_decode(raw, conf, iou, max_candidates, max_det, multi_label, agnostic)
    for g, e, dtype in zip(got, expected, (np.float32, np.float32, np.int64)):
        assert g.dtype == dtype
        np.testing.assert_array_equal(g, e.astype(dtype))


def test_decode_of_a_frame_with_nothing_above_conf_is_empty_and_typed():
    raw = np.zeros((50, 4 + 3), np.float32)
    raw[:, 4:] = 0.2
    boxes, scores, classes = decode_detections(raw, conf=0.2, iou=0.5)  # equal to conf is not above it
    assert boxes.shape == (0, 4) and boxes.dtype == np.float32
    assert scores.shape == (0,) and scores.dtype == np.float32 and classes.dtype == np.int64
    assert decode_detections(np.zeros((0, 7), np.float32), 0.2, 0.5)[0].shape == (0, 4)


def test_decode_accepts_other_float_layouts_and_refuses_bad_arguments():
    raw = np.zeros((6, 4 + 2), np.float64)
    raw[2] = [1, 1, 5, 5, 0.9, 0.1]
    boxes, scores, _ = decode_detections(np.asfortranarray(raw), 0.25, 0.5)  # converted, not refused
    assert boxes.tolist() == [[1, 1, 5, 5]] and scores.tolist() == pytest.approx([0.9])
    with pytest.raises(ValueError, match="A, 4 \\+ C"):
        decode_detections(raw[:, 0], 0.25, 0.5)
    with pytest.raises(ValueError, match="max_candidates"):
        decode_detections(raw, 0.25, 0.5, max_candidates=0)
    with pytest.raises(ValueError, match="finite"):
        decode_detections(raw, float("nan"), 0.5)


def test_box_iou_matrix():
    a = np.array([[0, 0, 2, 2]], np.float32)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2]], np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[1 / 7, 1.0]], rtol=1e-6)


def test_normalize_matches_the_numpy_definition_for_any_mean_and_std():
    rng = np.random.default_rng(0)
    canvases = rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    x = canvases[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)
    for mean, std in (([0, 0, 0], [255, 255, 255]), ([123.7, 116.3, 103.5], [58.4, 57.1, 57.4])):
        ref = (x - np.float32(mean).reshape(1, 3, 1, 1)) / np.float32(std).reshape(1, 3, 1, 1)
        got = normalize_nchw(canvases, mean, std)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-5)
    assert normalize_nchw(canvases[:0], [0, 0, 0], [1, 1, 1]).shape == (0, 3, 32, 32)

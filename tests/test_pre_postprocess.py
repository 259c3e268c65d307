"""Letterbox, frame checks, decode and NMS: the steps shared by training, export and the runtime."""

from __future__ import annotations

import numpy as np
import pytest

from diffdefect_edge.postprocess import batched_nms, box_iou, decode_detections, nms
from diffdefect_edge.preprocess import PAD_VALUE, letterbox, normalize_nchw, to_bgr


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


def test_letterbox_into_a_reused_canvas_equals_a_fresh_one():
    """The camera path resizes into last frame's canvas and skips the pads when the placement is unchanged:
    the canvas must still be exactly what a fresh letterbox gives, also when the frame size changes."""
    rng = np.random.default_rng(0)
    shapes = [(720, 1280, 3), (720, 1280, 3), (300, 120, 3), (720, 1280, 3), (64, 64, 3), (90, 50, 3)]
    canvas, placement = None, None
    for shape in shapes:
        frame = rng.integers(0, 256, shape, dtype=np.uint8)
        expected, expected_lb = letterbox(frame, 64)
        canvas, placement = letterbox(frame, 64, out=canvas, out_placement=placement)
        assert placement == expected_lb
        np.testing.assert_array_equal(canvas, expected)
    for shape in [(50, 80), (50, 80, 1)]:  # one-channel frames into one-channel canvases
        frame = rng.integers(0, 256, shape, dtype=np.uint8)
        expected, _ = letterbox(frame, 32, pad_value=0)
        reused, _ = letterbox(frame, 32, pad_value=0, out=np.full(expected.shape, 9, np.uint8))
        np.testing.assert_array_equal(reused, expected)


def test_boxes_are_clipped_to_the_frame():
    _, lb = letterbox(np.zeros((100, 200, 3), np.uint8), 64)
    out = lb.boxes_to_frame(np.array([[-10, -10, 100, 100]], np.float32))
    assert out.min() >= 0 and out[0, 2] <= 200 and out[0, 3] <= 100


@pytest.mark.parametrize("frame,message", [
    (None, "None"),
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    (np.zeros((10, 10, 3), np.float32), "dtype float32"),
    (np.full((10, 10, 3), np.nan, np.float32), "NaN"),
    (np.zeros((10, 10, 4), np.uint8), "shape"),
    (np.zeros((10, 10, 3), np.uint8)[:, ::2], "not C-contiguous"),
    ([[1, 2]], "list"),
])
def test_bad_frames_raise_value_error_saying_what_was_expected(frame, message):
    with pytest.raises(ValueError, match=message) as info:
        to_bgr(frame)
    assert "expected" in str(info.value)


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
    boxes, scores, classes = decode_detections(raw, conf=0.25, iou=0.5)
    assert scores.tolist() == pytest.approx([0.9, 0.8, 0.3])
    assert classes.tolist() == [0, 1, 1]
    assert decode_detections(raw, 0.25, 0.5, max_det=1)[1].tolist() == pytest.approx([0.9])
    with pytest.raises(ValueError, match="A, 4 \\+ C"):
        decode_detections(raw[:, :4], 0.25, 0.5)


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

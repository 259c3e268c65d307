"""Stratified splits and the COCO evaluator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import Dataset, Record, split_dataset
from training.evaluation import Prediction, evaluate_detections, save_pr_curves


def _dataset(n: int = 60) -> Dataset:
    recs = []
    for i in range(n):
        cls = i % 3
        boxes = np.array([[10, 10, 50, 50]] * (0 if i % 10 == 9 else 1), np.float32)
        recs.append(Record(f"img{i:03d}", Path(f"/x/{i}.png"), 100, 100, boxes, np.full(len(boxes), cls)))
    return Dataset(recs, ["a", "b", "c"])


def test_split_is_deterministic_disjoint_complete_and_stratified():
    ds = _dataset()
    tr, va = split_dataset(ds, 0.25, seed=1)
    tr2, va2 = split_dataset(Dataset(list(reversed(ds.records)), ds.class_names), 0.25, seed=1)
    assert [r.image_id for r in va.records] == sorted(r.image_id for r in va2.records)
    ids_tr, ids_va = {r.image_id for r in tr.records}, {r.image_id for r in va.records}
    assert not ids_tr & ids_va and len(ids_tr | ids_va) == len(ds)
    for cls in range(3):
        n_all = sum(1 for r in ds.records if r.num_boxes and r.class_ids[0] == cls)
        n_val = sum(1 for r in va.records if r.num_boxes and r.class_ids[0] == cls)
        assert n_val == round(0.25 * n_all)
    assert any(r.num_boxes == 0 for r in va.records)
    assert split_dataset(ds, 0.25, seed=2)[1].records != va.records
    with pytest.raises(ValueError, match="val_fraction"):
        split_dataset(ds, 1.5)


def _one(boxes) -> list[Record]:
    return [Record("a", Path("/a.png"), 300, 300, np.array(boxes, np.float32), np.zeros(len(boxes), np.int64))]


def test_perfect_predictions_score_one():
    ds = _dataset(30)
    preds = [Prediction(i, int(c), tuple(b), 0.9) for i, r in enumerate(ds.records)
             for b, c in zip(r.boxes, r.class_ids)]
    m = evaluate_detections(ds.records, ds.class_names, preds)
    assert m.map50 == pytest.approx(1.0) and m.map50_95 == pytest.approx(1.0)
    assert m.per_class_ap50 == {"a": pytest.approx(1.0), "b": pytest.approx(1.0), "c": pytest.approx(1.0)}


def test_shifted_box_counts_only_at_thresholds_below_its_iou():
    # shift by 10 px: IoU = 90/110 = 0.818 -> passes the 7 thresholds 0.50..0.80 of 10
    m = evaluate_detections(_one([[100, 100, 200, 200]]), ["a"], [Prediction(0, 0, (110, 100, 210, 200), 0.9)])
    assert m.map50 == pytest.approx(1.0)
    assert m.map50_95 == pytest.approx(0.7)


def test_missing_box_halves_recall():
    # recall tops out at 0.5: precision 1 at 51 of the 101 recall points
    m = evaluate_detections(_one([[100, 100, 200, 200], [0, 0, 50, 50]]), ["a"],
                            [Prediction(0, 0, (100, 100, 200, 200), 0.9)])
    assert m.map50 == pytest.approx(51 / 101)


def test_wrong_class_and_empty_predictions_score_zero():
    recs = _one([[100, 100, 200, 200]])
    assert evaluate_detections(recs, ["a", "b"], [Prediction(0, 1, (100, 100, 200, 200), 0.9)]).map50 == 0
    m = evaluate_detections(recs, ["a", "b"], [])
    assert m.map50 == 0 and m.map50_95 == 0 and m.per_class_ap50["a"] == 0
    assert np.isnan(m.per_class_ap50["b"])  # no ground truth for "b": not part of the mean


def test_bad_predictions_are_refused():
    with pytest.raises(ValueError, match="image_index 3"):
        evaluate_detections(_one([[1, 1, 5, 5]]), ["a"], [Prediction(3, 0, (1, 1, 5, 5), 0.5)])
    with pytest.raises(ValueError, match="class_id 2"):
        evaluate_detections(_one([[1, 1, 5, 5]]), ["a"], [Prediction(0, 2, (1, 1, 5, 5), 0.5)])


def test_pr_curves_are_written(tmp_path: Path):
    m = evaluate_detections(_one([[100, 100, 200, 200], [0, 0, 50, 50]]), ["a"],
                            [Prediction(0, 0, (100, 100, 200, 200), 0.9), Prediction(0, 0, (0, 0, 40, 50), 0.5)])
    paths = save_pr_curves(m, tmp_path / "pr")
    assert {p.name for p in paths} == {"pr_a.png", "pr_all.png"}
    assert all(p.stat().st_size > 1000 for p in paths)

"""COCO, YOLO and Tianchi loaders, auto-detection, and their bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_gray_jpeg_3ch

from training.data import DatasetError, detect_format, load_dataset


def make_coco(root: Path, annotations=None, categories=None, images=None) -> Path:
    write_gray_jpeg_3ch(root / "images" / "a.jpg", 100, 80)
    write_gray_jpeg_3ch(root / "images" / "b.jpg", 100, 80)
    data = {
        "images": images or [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80},
                             {"id": 2, "file_name": "b.jpg", "width": 100, "height": 80}],
        "categories": categories or [{"id": 7, "name": "hole"}, {"id": 3, "name": "stain"}],
        "annotations": annotations if annotations is not None else [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 30], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [50, 5, 10, 10], "iscrowd": 0},
        ],
    }
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances.json").write_text(json.dumps(data))
    return root


def test_coco_loads_xywh_and_orders_classes_by_category_id(tmp_path: Path):
    ds = load_dataset(make_coco(tmp_path / "c"))
    assert ds.format == "coco"
    assert ds.class_names == ["stain", "hole"]  # category ids 3, 7
    a, b = ds.records
    np.testing.assert_array_equal(a.boxes, [[10, 10, 30, 40], [50, 5, 60, 15]])
    assert a.class_ids.tolist() == [1, 0]
    assert b.num_boxes == 0


@pytest.mark.parametrize(
    "ann, problem",
    [
        ({"id": 1, "image_id": 1, "category_id": 99, "bbox": [1, 1, 2, 2]}, "unknown class"),
        ({"id": 1, "image_id": 1, "category_id": 7, "bbox": [90, 1, 20, 2]}, "outside"),
        ({"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 1, 0, 2]}, "degenerate"),
        ({"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5], "iscrowd": 1}, "crowd annotation"),
        ({"id": 1, "image_id": 9, "category_id": 7, "bbox": [1, 1, 5, 5]}, "unknown image id"),
    ],
)
def test_coco_bad_annotations(tmp_path: Path, ann, problem):
    root = make_coco(tmp_path / "c", annotations=[ann])
    with pytest.raises(DatasetError, match=problem) as info:
        load_dataset(root)
    assert "instances.json" in str(info.value)


def test_coco_broken_json_and_missing_image(tmp_path: Path):
    root = make_coco(tmp_path / "c")
    (root / "images" / "b.jpg").unlink()
    with pytest.raises(DatasetError, match=r"b\.jpg.*image file is missing"):
        load_dataset(root)
    (root / "annotations" / "instances.json").write_text('{"images": [], "categories": [')
    with pytest.raises(DatasetError, match=r"instances\.json.*broken JSON"):
        load_dataset(root, format="coco")


def make_yolo(root: Path, label_lines: str = "1 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.1 0.1\n") -> Path:
    write_gray_jpeg_3ch(root / "images" / "train" / "x.jpg", 200, 100)
    write_gray_jpeg_3ch(root / "images" / "train" / "clean.jpg", 200, 100)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "x.txt").write_text(label_lines)
    (root / "data.yaml").write_text("names:\n  0: dent\n  1: rust\n")
    return root


def test_yolo_denormalises_and_keeps_background_images(tmp_path: Path):
    ds = load_dataset(make_yolo(tmp_path / "y"))
    assert ds.format == "yolo" and ds.class_names == ["dent", "rust"]
    recs = {r.image_id: r for r in ds.records}
    np.testing.assert_allclose(recs["x"].boxes, [[80, 30, 120, 70], [10, 5, 30, 15]], atol=1e-4)
    assert recs["x"].class_ids.tolist() == [1, 0]
    assert recs["clean"].num_boxes == 0


@pytest.mark.parametrize(
    "lines, problem",
    [("5 0.5 0.5 0.1 0.1\n", "unknown class id 5"), ("0 0.5 0.5\n", "expected 'cls cx cy w h'"),
     ("0 0.95 0.5 0.2 0.2\n", "outside"), ("0 a 0.5 0.2 0.2\n", "non-numeric")],
)
def test_yolo_bad_labels_name_the_file(tmp_path: Path, lines: str, problem: str):
    root = make_yolo(tmp_path / "y", lines)
    with pytest.raises(DatasetError, match=problem) as info:
        load_dataset(root)
    assert info.value.path.endswith("x.txt")


def make_tianchi(root: Path, entries=None) -> Path:
    for name in ("f1.jpg", "f2.jpg", "ok.jpg"):
        write_gray_jpeg_3ch(root / "defect_Images" / name, 120, 90)
    entries = entries if entries is not None else [
        {"name": "f1.jpg", "defect_name": "hole", "bbox": [10.5, 10, 40, 50]},
        {"name": "f1.jpg", "defect_name": "stain", "bbox": [60, 20, 100, 80]},
        {"name": "f2.jpg", "defect_name": "hole", "bbox": [1, 1, 5, 5]},
    ]
    (root / "anno_train.json").write_text(json.dumps(entries))
    return root


def test_tianchi_groups_entries_and_keeps_defect_free_images(tmp_path: Path):
    ds = load_dataset(make_tianchi(tmp_path / "t"))
    assert ds.format == "tianchi" and ds.class_names == ["hole", "stain"]
    recs = {r.image_id: r for r in ds.records}
    assert set(recs) == {"f1", "f2", "ok"}
    np.testing.assert_allclose(recs["f1"].boxes, [[10.5, 10, 40, 50], [60, 20, 100, 80]])
    assert recs["f1"].class_ids.tolist() == [0, 1]
    assert recs["ok"].num_boxes == 0


def test_tianchi_bad_inputs(tmp_path: Path):
    root = make_tianchi(tmp_path / "t", [{"name": "gone.jpg", "defect_name": "hole", "bbox": [1, 1, 5, 5]}])
    with pytest.raises(DatasetError, match=r"gone\.jpg.*image file is missing"):
        load_dataset(root)
    root = make_tianchi(tmp_path / "t2", [{"name": "f1.jpg", "defect_name": "hole", "bbox": [1, 1, 500, 5]}])
    with pytest.raises(DatasetError, match=r"f1\.jpg.*outside"):
        load_dataset(root)
    root = make_tianchi(tmp_path / "t3", [{"name": "f1.jpg", "defect_name": "hole", "bbox": [1, 1, 5, 5]}])
    with pytest.raises(DatasetError, match="unknown class 'hole'"):
        load_dataset(root, class_names=["stain"])


def test_detect_format_and_unknown_layout(tmp_path: Path, neu_like: Path):
    assert detect_format(neu_like) == "voc"
    assert detect_format(make_coco(tmp_path / "c")) == "coco"
    assert detect_format(make_yolo(tmp_path / "y")) == "yolo"
    assert detect_format(make_tianchi(tmp_path / "t")) == "tianchi"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="cannot tell the dataset format"):
        detect_format(tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(ValueError, match="on_error"):
        load_dataset(neu_like, on_error="ignore")


def test_each_loader_refuses_an_unknown_on_error_mode(tmp_path: Path, neu_like: Path):
    from training.data.coco import load_coco
    from training.data.tianchi import load_tianchi
    from training.data.voc import load_voc
    from training.data.yolo import load_yolo

    for load, path in ((load_voc, neu_like), (load_coco, make_coco(tmp_path / "c")),
                       (load_yolo, make_yolo(tmp_path / "y")), (load_tianchi, make_tianchi(tmp_path / "t"))):
        with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip', got 'ignore'"):
            load(path, on_error="ignore")

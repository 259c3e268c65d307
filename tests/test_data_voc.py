"""VOC loading: NEU-DET's real quirks, and every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import voc_xml, write_gray_jpeg_3ch

from training.data import DatasetError, load_dataset
from training.data.voc import load_voc

NEU = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "neu-det-train"


def test_neu_quirks_load(neu_like: Path):
    ds = load_dataset(neu_like)
    assert ds.format == "voc"
    assert ds.class_names == ["crazing", "patches", "scratches"]
    recs = {r.image_id: r for r in ds.records}
    cr = recs["crazing_1"]  # <filename> has no extension: matched by stem
    assert cr.image_path.name == "crazing_1.jpg"
    assert (cr.width, cr.height) == (200, 200)  # from the image, though the XML says depth 1
    # 1-based inclusive -> continuous pixels: xmin - 1, ymin - 1, xmax, ymax
    np.testing.assert_array_equal(cr.boxes, [[0, 0, 200, 100], [9, 19, 30, 200]])
    # labels from each <object><name>, not the file name
    assert [ds.class_names[c] for c in cr.class_ids] == ["crazing", "scratches"]
    np.testing.assert_array_equal(recs["patches_7"].boxes, [[49, 59, 70, 80]])


def test_class_names_fix_order_and_unknown_class_is_named(neu_like: Path):
    ds = load_voc(neu_like, class_names=["scratches", "patches", "crazing"])
    assert ds.records[0].class_ids.tolist() == [2, 0]
    with pytest.raises(DatasetError, match=r"crazing_1\.xml.*unknown class 'scratches'"):
        load_voc(neu_like, class_names=["crazing", "patches"])


def _break(root: Path, stem: str, xml: str) -> None:
    (root / "ANNOTATIONS" / f"{stem}.xml").write_text(xml)


@pytest.mark.parametrize(
    "xml, problem",
    [
        (voc_xml("bad", [("crazing", (10, 10, 250, 50))]), "outside the 200x200 image"),
        (voc_xml("bad", [("crazing", (0, 10, 50, 50))]), "outside"),  # 1-based: xmin 0 is -1
        (voc_xml("bad", [("crazing", (50, 10, 40, 50))]), "degenerate box"),
        ("<annotation><object><name>crazing</name", "broken XML"),
        ("<annotation><object><name>crazing</name><bndbox><xmin>a</xmin></bndbox></object></annotation>",
         "non-numeric coordinate"),
    ],
)
def test_bad_annotation_raises_naming_file(neu_like: Path, xml: str, problem: str):
    write_gray_jpeg_3ch(neu_like / "IMAGES" / "bad.jpg")
    _break(neu_like, "bad", xml)
    with pytest.raises(DatasetError, match=problem) as info:
        load_dataset(neu_like)
    assert info.value.path.endswith("bad.xml")


def test_missing_image_is_named(neu_like: Path):
    _break(neu_like, "lonely", voc_xml("lonely", [("crazing", (1, 1, 5, 5))]))
    with pytest.raises(DatasetError, match=r"lonely\.xml.*image missing"):
        load_dataset(neu_like)


def test_unreadable_image_is_named(neu_like: Path):
    (neu_like / "IMAGES" / "junk.jpg").write_bytes(b"this is not a jpeg")
    _break(neu_like, "junk", voc_xml("junk", [("crazing", (1, 1, 5, 5))]))
    with pytest.raises(DatasetError, match=r"junk\.jpg.*unreadable image"):
        load_dataset(neu_like)


def test_skip_mode_reports_each_skipped_record(neu_like: Path):
    _break(neu_like, "lonely", voc_xml("lonely", [("crazing", (1, 1, 5, 5))]))
    write_gray_jpeg_3ch(neu_like / "IMAGES" / "bad.jpg")
    _break(neu_like, "bad", "<annotation>")
    ds = load_dataset(neu_like, on_error="skip")
    assert len(ds) == 2
    assert len(ds.skip_report) == 2
    summary = ds.skip_report.summary()
    assert "lonely.xml" in summary and "bad.xml" in summary and "broken XML" in summary
    assert sum(r.num_boxes for r in ds.records) == 3  # the good records keep every box


def test_masks_are_found(tmp_path: Path):
    root = tmp_path / "voc"
    write_gray_jpeg_3ch(root / "JPEGImages" / "a.png")
    (root / "Annotations").mkdir()
    (root / "Annotations" / "a.xml").write_text(voc_xml("a.png", [("x", (1, 1, 10, 10))]))
    write_gray_jpeg_3ch(root / "SegmentationClass" / "a.png")  # same stem as the image: must not clash
    ds = load_dataset(root)
    assert ds.records[0].mask_path == root / "SegmentationClass" / "a.png"
    assert ds.records[0].image_path == root / "JPEGImages" / "a.png"


def test_gc10_layout_images_in_class_folders(tmp_path: Path):
    root = tmp_path / "gc10"
    write_gray_jpeg_3ch(root / "1" / "img_01.jpg", 300, 100)
    write_gray_jpeg_3ch(root / "2" / "img_02.jpg", 300, 100)
    (root / "lable").mkdir()
    (root / "lable" / "img_01.xml").write_text(voc_xml("img_01.jpg", [("1_chongkong", (5, 5, 50, 50))], 300, 100))
    (root / "lable" / "img_02.xml").write_text(voc_xml("img_02.jpg", [("2_hanfeng", (5, 5, 300, 100))], 300, 100))
    ds = load_dataset(root)
    assert len(ds) == 2 and ds.class_names == ["1_chongkong", "2_hanfeng"]


@pytest.mark.skipif(not NEU.is_dir(), reason="the real NEU-DET folder is not next to this checkout")
def test_real_neu_det_loads_every_box():
    ds = load_dataset(NEU)
    assert len(ds) == 1440
    assert ds.class_names == ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
    assert ds.stats()["num_boxes"] == 3391
    assert all(r.boxes.min() >= 0 and r.boxes[:, 2].max() <= 200 for r in ds.records)

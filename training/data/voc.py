"""Pascal VOC folders: NEU-DET (ANNOTATIONS/ + IMAGES/), classic VOC (Annotations/ + JPEGImages/) and
GC10-DET (XMLs in lable/, images in class-numbered folders).

Annotations are matched to images by file stem (NEU-DET's <filename> often lacks the extension); each
box's label comes from its own <object><name>; VOC coordinates are 1-based inclusive pixel indices, so
[xmin, ymin, xmax, ymax] becomes [xmin - 1, ymin - 1, xmax, ymax] in continuous pixel coordinates.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from training.data.images import image_size, index_images_by_stem
from training.data.records import Dataset, DatasetError, Record, SkipReport, class_index, validate_boxes

ANNOTATION_DIRS = ("Annotations", "ANNOTATIONS", "annotations", "lable", "label", "labels", "xml")
IMAGE_DIRS = ("JPEGImages", "IMAGES", "images", "Images")
MASK_DIRS = ("SegmentationClass", "masks")
CLASSES_FILE = "classes.txt"


def find_annotation_dir(root: Path) -> Path | None:
    for name in ANNOTATION_DIRS:
        d = root / name
        if d.is_dir() and any(d.glob("*.xml")):
            return d
    return None


def _parse_xml(path: Path) -> list[tuple[str, list[float]]]:
    try:
        tree = ET.parse(path)
    except ET.ParseError as exc:
        raise DatasetError(path, f"broken XML ({exc})") from None
    objects = []
    for i, obj in enumerate(tree.getroot().iter("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DatasetError(path, f"object {i} has no <name>")
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DatasetError(path, f"object {i} ({name}) has no <bndbox>")
        try:
            coords = [float(bnd.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise DatasetError(path, f"object {i} ({name}) has a missing or non-numeric coordinate") from None
        xmin, ymin, xmax, ymax = coords
        objects.append((name, [xmin - 1.0, ymin - 1.0, xmax, ymax]))
    return objects


def read_class_names(root: Path) -> list[str] | None:
    path = root / CLASSES_FILE
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise DatasetError(path, "duplicate class names")
    return names


def load_voc(root: str | Path, class_names: list[str] | None = None, on_error: str = "raise") -> Dataset:
    """Load a VOC-layout folder. ``class_names`` fixes the id order (else ``classes.txt``, else sorted names).

    ``on_error="skip"`` leaves out bad records and reports each in ``dataset.skip_report``.
    """
    root = Path(root)
    report = SkipReport(on_error)  # checks on_error before any file is read
    ann_dir = find_annotation_dir(root)
    if ann_dir is None:
        raise DatasetError(root, f"no VOC annotation folder with .xml files (looked for {', '.join(ANNOTATION_DIRS)})")
    mask_dir = next((root / d for d in MASK_DIRS if (root / d).is_dir()), None)
    image_root = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), root)
    exclude = tuple(p for p in (ann_dir, mask_dir) if p is not None)
    images = index_images_by_stem(image_root, exclude=exclude)

    parsed: list[tuple[Path, list[tuple[str, list[float]]]]] = []
    for xml_path in sorted(ann_dir.glob("*.xml")):
        try:
            parsed.append((xml_path, _parse_xml(xml_path)))
        except DatasetError as err:
            report.handle(err)

    names = class_names or read_class_names(root) or sorted({n for _, objs in parsed for n, _ in objs})
    records: list[Record] = []
    for xml_path, objects in parsed:
        try:
            records.append(_to_record(xml_path, objects, images, names, mask_dir))
        except DatasetError as err:
            report.handle(err)
    return Dataset(records=records, class_names=list(names), root=root, format="voc", skip_report=report)


def _to_record(xml_path: Path, objects, images: dict[str, Path], names: list[str], mask_dir: Path | None) -> Record:
    image_path = images.get(xml_path.stem)
    if image_path is None:
        raise DatasetError(xml_path, f"no image with stem {xml_path.stem!r} for this annotation (image missing)")
    width, height = image_size(image_path)
    boxes = np.array([b for _, b in objects], dtype=np.float32).reshape(-1, 4)
    boxes = validate_boxes(xml_path, boxes, width, height)
    class_ids = [class_index(xml_path, n, names) for n, _ in objects]
    mask_path = None
    if mask_dir is not None and (mask_dir / f"{xml_path.stem}.png").is_file():
        mask_path = mask_dir / f"{xml_path.stem}.png"
    return Record(xml_path.stem, image_path, width, height, boxes, np.array(class_ids), mask_path)


def write_voc_xml(path: Path, image_name: str, width: int, height: int, depth: int,
                  objects: list[tuple[str, np.ndarray]]) -> None:
    """Write one VOC annotation; boxes are continuous xyxy pixels, written 1-based inclusive."""
    ann = ET.Element("annotation")
    ET.SubElement(ann, "filename").text = image_name
    size = ET.SubElement(ann, "size")
    for key, val in (("width", width), ("height", height), ("depth", depth)):
        ET.SubElement(size, key).text = str(val)
    for name, (x1, y1, x2, y2) in objects:
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "difficult").text = "0"
        bnd = ET.SubElement(obj, "bndbox")
        for key, val in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(bnd, key).text = str(int(round(float(val))))
    ET.indent(ann)
    ET.ElementTree(ann).write(path, encoding="utf-8", xml_declaration=False)

"""YOLO txt layout: ``images/[split/]*.jpg`` and ``labels/[split/]*.txt`` with ``cls cx cy w h`` normalised.

Class names come from ``data.yaml`` (``names:`` list or mapping), ``classes.txt`` or ``class_names``.
An image without a label file is a defect-free image; a label file without an image is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from training.data.images import image_size, index_images_by_stem
from training.data.records import Dataset, DatasetError, Record, SkipReport, validate_boxes


def yolo_class_names(root: Path) -> list[str] | None:
    for name in ("data.yaml", "dataset.yaml"):
        path = root / name
        if path.is_file():
            try:
                cfg = yaml.safe_load(path.read_text())
            except yaml.YAMLError as exc:
                raise DatasetError(path, f"broken YAML ({exc})") from None
            names = (cfg or {}).get("names")
            if isinstance(names, dict):
                return [str(names[k]) for k in sorted(names)]
            if isinstance(names, list):
                return [str(n) for n in names]
            raise DatasetError(path, "no 'names' list or mapping")
    path = root / "classes.txt"
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return None


def load_yolo(root: str | Path, class_names: list[str] | None = None, on_error: str = "raise") -> Dataset:
    root = Path(root)
    label_dir, image_dir = root / "labels", root / "images"
    if not label_dir.is_dir() or not image_dir.is_dir():
        raise DatasetError(root, "a YOLO folder needs images/ and labels/")
    names = class_names or yolo_class_names(root)
    if not names:
        raise DatasetError(root, "no class names (data.yaml, classes.txt or class_names=...)")
    images = index_images_by_stem(image_dir)
    labels = {p.stem: p for p in sorted(label_dir.rglob("*.txt"))}
    report = SkipReport(on_error)
    for stem, label_path in labels.items():
        if stem not in images:
            report.handle(DatasetError(label_path, f"no image with stem {stem!r} for this label file (image missing)"))
    records = []
    for stem, image_path in images.items():
        try:
            records.append(_to_record(stem, image_path, labels.get(stem), names))
        except DatasetError as err:
            report.handle(err)
    return Dataset(records=records, class_names=list(names), root=root, format="yolo", skip_report=report)


def _to_record(stem: str, image_path: Path, label_path: Path | None, names: list[str]) -> Record:
    width, height = image_size(image_path)
    boxes, class_ids = [], []
    if label_path is not None:
        for lineno, line in enumerate(label_path.read_text().splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 5:
                raise DatasetError(label_path, f"line {lineno}: expected 'cls cx cy w h', got {line!r}")
            try:
                cls = int(parts[0])
                cx, cy, w, h = (float(v) for v in parts[1:5])
            except ValueError:
                raise DatasetError(label_path, f"line {lineno}: non-numeric value in {line!r}") from None
            if not 0 <= cls < len(names):
                raise DatasetError(label_path, f"line {lineno}: unknown class id {cls} ({len(names)} classes)")
            boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
            class_ids.append(cls)
    boxes_arr = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    # normalised coordinates are often rounded to 6 digits: allow that much slack, then clip
    boxes_arr = validate_boxes(label_path or image_path, boxes_arr, width, height, tol=1e-4 * max(width, height))
    return Record(stem, image_path, width, height, boxes_arr, np.array(class_ids, dtype=np.int64))

"""COCO JSON: ``{"images": [...], "annotations": [...], "categories": [...]}`` with xywh boxes.

Class ids follow the category ids in ascending order. Crowd annotations (``iscrowd=1``) are regions, not
objects: they are refused unless ``keep_crowd`` is set, so nothing is dropped silently.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.data.records import Dataset, DatasetError, Record, SkipReport, validate_boxes


def read_json(path: Path):
    if not path.is_file():
        raise DatasetError(path, "annotation file is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(path, f"broken JSON ({exc})") from None


def find_coco_json(root: Path) -> Path | None:
    if root.is_file() and root.suffix == ".json":
        return root
    for candidate in sorted(root.glob("annotations/*.json")) + sorted(root.glob("*.json")):
        try:
            head = candidate.read_text(encoding="utf-8")[:200000]
        except (OSError, UnicodeDecodeError):
            continue
        if '"images"' in head and '"categories"' in head:
            return candidate
    return None


def load_coco(path: str | Path, image_dir: str | Path | None = None, on_error: str = "raise",
              keep_crowd: bool = False) -> Dataset:
    """Load a COCO JSON file (or a folder holding ``annotations/*.json`` and ``images/``)."""
    path = Path(path)
    json_path = find_coco_json(path)
    if json_path is None:
        raise DatasetError(path, "no COCO JSON (with 'images' and 'categories') found")
    root = json_path.parent.parent if json_path.parent.name == "annotations" else json_path.parent
    if image_dir is None:
        image_dir = root / "images" if (root / "images").is_dir() else root
    image_dir = Path(image_dir)
    data = read_json(json_path)
    try:
        categories = sorted(data["categories"], key=lambda c: c["id"])
        images = data["images"]
        annotations = data.get("annotations", [])
        cat_index = {int(c["id"]): i for i, c in enumerate(categories)}
        names = [str(c["name"]) for c in categories]
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(json_path, f"not a COCO detection file (missing or bad {exc})") from None

    per_image: dict[int, list[dict]] = {}
    for ann in annotations:
        per_image.setdefault(ann.get("image_id"), []).append(ann)
    known_ids = {img.get("id") for img in images}
    orphans = set(per_image) - known_ids
    if orphans:
        raise DatasetError(json_path, f"annotations refer to unknown image id(s) {sorted(orphans)[:5]}")

    report = SkipReport(on_error)
    records = []
    for img in images:
        try:
            records.append(_to_record(json_path, img, per_image.get(img.get("id"), []), image_dir,
                                      cat_index, keep_crowd))
        except DatasetError as err:
            report.handle(err)
    return Dataset(records=records, class_names=names, root=root, format="coco", skip_report=report)


def _to_record(json_path: Path, img: dict, anns: list[dict], image_dir: Path, cat_index: dict[int, int],
               keep_crowd: bool) -> Record:
    try:
        file_name, width, height = img["file_name"], int(img["width"]), int(img["height"])
    except (KeyError, TypeError, ValueError):
        raise DatasetError(json_path, f"image entry {img.get('id')!r} lacks file_name/width/height") from None
    image_path = image_dir / file_name
    if not image_path.is_file():
        raise DatasetError(image_path, f"image file is missing (listed in {json_path.name})")
    where = f"{json_path} (image {file_name})"
    boxes, class_ids = [], []
    for ann in anns:
        if ann.get("iscrowd", 0) and not keep_crowd:
            raise DatasetError(where, f"crowd annotation {ann.get('id')} (pass keep_crowd=True to keep it as a box)")
        cat = ann.get("category_id")
        if cat not in cat_index:
            raise DatasetError(where, f"unknown class: category_id {cat!r} is not in 'categories'")
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(where, f"annotation {ann.get('id')} has no valid 'bbox'") from None
        boxes.append([x, y, x + w, y + h])
        class_ids.append(cat_index[cat])
    boxes_arr = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    boxes_arr = validate_boxes(where, boxes_arr, width, height)
    return Record(Path(file_name).stem, image_path, width, height, boxes_arr, np.array(class_ids, dtype=np.int64))

"""Tianchi fabric-defect JSON: a flat list of ``{"name", "defect_name", "bbox": [x1, y1, x2, y2]}``.

Several entries per image; defect-free images are absent from the JSON but present in the image folder,
so every image in the folder becomes a record (with no boxes when the JSON does not mention it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data.coco import read_json
from training.data.images import image_size, index_images_by_stem
from training.data.records import Dataset, DatasetError, Record, SkipReport, class_index, validate_boxes


def find_tianchi_json(root: Path) -> Path | None:
    if root.is_file() and root.suffix == ".json":
        return root
    for candidate in sorted(root.glob("*.json")):
        head = candidate.read_text(encoding="utf-8", errors="replace").lstrip()[:4000]
        if head.startswith("[") and '"defect_name"' in head:
            return candidate
    return None


def load_tianchi(path: str | Path, image_dir: str | Path | None = None, class_names: list[str] | None = None,
                 on_error: str = "raise") -> Dataset:
    path = Path(path)
    json_path = find_tianchi_json(path)
    if json_path is None:
        raise DatasetError(path, "no Tianchi JSON (a list of {name, defect_name, bbox}) found")
    root = json_path.parent
    if image_dir is None:
        image_dir = next((root / d for d in ("defect_Images", "images", "Images") if (root / d).is_dir()), root)
    entries = read_json(json_path)
    if not isinstance(entries, list):
        raise DatasetError(json_path, "expected a JSON list of {name, defect_name, bbox} entries")
    per_image: dict[str, list[tuple[str, list[float]]]] = {}
    for i, entry in enumerate(entries):
        try:
            name, defect = str(entry["name"]), str(entry["defect_name"])
            bbox = [float(v) for v in entry["bbox"]]
        except (KeyError, TypeError, ValueError):
            raise DatasetError(json_path, f"entry {i} lacks a valid name/defect_name/bbox") from None
        if len(bbox) != 4:
            raise DatasetError(json_path, f"entry {i} ({name}): bbox must have 4 numbers, got {len(bbox)}")
        per_image.setdefault(name, []).append((defect, bbox))
    names = class_names or sorted({d for objs in per_image.values() for d, _ in objs})
    images = index_images_by_stem(Path(image_dir))
    by_name = {p.name: p for p in images.values()}
    report = SkipReport(on_error)
    for name in per_image:
        if name not in by_name:
            report.handle(DatasetError(Path(image_dir) / name, f"image file is missing (listed in {json_path.name})"))
    records = []
    for image_name, image_path in sorted(by_name.items()):
        try:
            width, height = image_size(image_path)
            objs = per_image.get(image_name, [])
            where = f"{json_path} (image {image_name})"
            boxes = np.array([b for _, b in objs], dtype=np.float32).reshape(-1, 4)
            boxes = validate_boxes(where, boxes, width, height)
            ids = np.array([class_index(where, d, names) for d, _ in objs], dtype=np.int64)
            records.append(Record(image_path.stem, image_path, width, height, boxes, ids))
        except DatasetError as err:
            report.handle(err)
    return Dataset(records=records, class_names=list(names), root=root, format="tianchi", skip_report=report)

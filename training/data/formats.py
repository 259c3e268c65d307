"""Format auto-detection and the one entry point ``load_dataset``."""

from __future__ import annotations

from pathlib import Path

from training.data.coco import find_coco_json, load_coco
from training.data.records import Dataset, DatasetError, check_on_error
from training.data.tianchi import find_tianchi_json, load_tianchi
from training.data.voc import find_annotation_dir, load_voc
from training.data.yolo import load_yolo

FORMATS = ("voc", "coco", "yolo", "tianchi")


def detect_format(path: str | Path) -> str:
    """Guess the layout of a dataset folder (or JSON file)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(path, "dataset path does not exist")
    if path.is_dir() and find_annotation_dir(path) is not None:
        return "voc"
    if path.is_dir() and (path / "labels").is_dir() and (path / "images").is_dir():
        return "yolo"
    if find_tianchi_json(path) is not None:
        return "tianchi"
    if find_coco_json(path) is not None:
        return "coco"
    raise DatasetError(path, f"cannot tell the dataset format (supported: {', '.join(FORMATS)})")


def load_dataset(path: str | Path, format: str = "auto", class_names: list[str] | None = None,
                 on_error: str = "raise") -> Dataset:
    """Load any supported layout into records + class names. ``on_error="skip"`` reports what it skips."""
    check_on_error(on_error)
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "voc":
        return load_voc(path, class_names=class_names, on_error=on_error)
    if fmt == "yolo":
        return load_yolo(path, class_names=class_names, on_error=on_error)
    if fmt == "tianchi":
        return load_tianchi(path, class_names=class_names, on_error=on_error)
    if fmt == "coco":
        ds = load_coco(path, on_error=on_error)
        if class_names and class_names != ds.class_names:
            raise DatasetError(path, f"COCO categories {ds.class_names} differ from class_names {class_names}")
        return ds
    raise ValueError(f"format must be 'auto' or one of {FORMATS}, got {format!r}")

"""The one record type every loader produces, and the dataset that holds them."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or wrong. The message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class Record:
    """One image and its annotations. Boxes are xyxy in pixels with (0, 0) the top-left image corner."""

    image_id: str
    image_path: Path
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float32, xyxy pixels
    class_ids: np.ndarray  # (N,) int64
    mask_path: Path | None = None  # class-index PNG: 0 background, k + 1 for class k

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        if len(boxes) != len(class_ids):
            raise ValueError(f"{self.image_path}: {len(boxes)} boxes but {len(class_ids)} class ids")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "class_ids", class_ids)
        object.__setattr__(self, "image_path", Path(self.image_path))
        if self.mask_path is not None:
            object.__setattr__(self, "mask_path", Path(self.mask_path))

    @property
    def num_boxes(self) -> int:
        return len(self.boxes)


ON_ERROR_MODES = ("raise", "skip")


def check_on_error(on_error: str) -> str:
    """``on_error`` itself, or ValueError when it is not "raise" or "skip"."""
    if on_error not in ON_ERROR_MODES:
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    return on_error


@dataclass
class SkipReport:
    """What a load left out, and why. ``on_error="raise"`` re-raises each error; ``"skip"`` records it."""

    on_error: str = "raise"
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_on_error(self.on_error)

    def handle(self, err: DatasetError) -> None:
        """Raise ``err`` (mode "raise") or record it and go on (mode "skip")."""
        if self.on_error == "raise":
            raise err
        self.skipped.append((err.path, err.problem))
        log.warning("skipping %s: %s", err.path, err.problem)

    def __len__(self) -> int:
        return len(self.skipped)

    def summary(self) -> str:
        if not self.skipped:
            return "no records skipped"
        lines = [f"{len(self.skipped)} record(s) skipped:"]
        lines += [f"  {path}: {problem}" for path, problem in self.skipped]
        return "\n".join(lines)


@dataclass
class Dataset:
    """Records plus class names (class id k is ``class_names[k]``)."""

    records: list[Record]
    class_names: list[str]
    root: Path | None = None
    format: str = ""
    skip_report: SkipReport = field(default_factory=SkipReport)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Record:
        return self.records[index]

    def subset(self, indices: list[int] | np.ndarray) -> Dataset:
        return dataclasses.replace(self, records=[self.records[i] for i in indices])

    def stats(self) -> dict[str, Any]:
        counts: Counter[int] = Counter()
        for rec in self.records:
            counts.update(rec.class_ids.tolist())
        sizes = Counter((r.width, r.height) for r in self.records)
        return {
            "format": self.format,
            "root": str(self.root) if self.root else None,
            "num_images": len(self.records),
            "num_boxes": int(sum(r.num_boxes for r in self.records)),
            "num_background_images": sum(1 for r in self.records if r.num_boxes == 0),
            "num_with_masks": sum(1 for r in self.records if r.mask_path is not None),
            "classes": list(self.class_names),
            "boxes_per_class": {name: int(counts.get(i, 0)) for i, name in enumerate(self.class_names)},
            "image_sizes": {f"{w}x{h}": n for (w, h), n in sizes.most_common()},
            "skipped": len(self.skip_report),
        }


def validate_boxes(path: str | Path, boxes: np.ndarray, width: int, height: int, tol: float = 1e-3) -> np.ndarray:
    """Return the boxes clipped to the image; raise DatasetError for a degenerate box or one outside it.

    ``tol`` (pixels) absorbs rounding in stored coordinates; anything further out is an error.
    """
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        box = f"[{x1:g}, {y1:g}, {x2:g}, {y2:g}]"
        if not np.all(np.isfinite([x1, y1, x2, y2])):
            raise DatasetError(path, f"box {box} has a non-finite coordinate")
        if x2 <= x1 or y2 <= y1:
            raise DatasetError(path, f"degenerate box {box} (needs x2 > x1 and y2 > y1)")
        if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
            raise DatasetError(path, f"box {box} lies outside the {width}x{height} image")
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    return boxes


def class_index(path: str | Path, name: str, class_names: list[str]) -> int:
    """Id of ``name`` in ``class_names``; DatasetError naming the file for an unknown class."""
    try:
        return class_names.index(name)
    except ValueError:
        raise DatasetError(path, f"unknown class {name!r} (known: {', '.join(class_names)})") from None

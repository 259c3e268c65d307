"""mAP@0.5 and mAP@0.5:0.95 and per-class AP from pycocotools, fed from our records and predictions."""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from training.data.records import Record


@dataclass(frozen=True)
class Prediction:
    """One detection: index of the image in the evaluated record list, class id, xyxy box, score."""

    image_index: int
    class_id: int
    box: tuple[float, float, float, float]
    score: float


@dataclass
class DetectionMetrics:
    map50: float
    map50_95: float
    per_class_ap50: dict[str, float]
    per_class_ap50_95: dict[str, float]
    num_images: int
    num_predictions: int
    # precision at 101 recall points, IoU 0.5, per class name (absent where the class has no ground truth)
    pr_curves: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {
            "map50": self.map50, "map50_95": self.map50_95, "per_class_ap50": self.per_class_ap50,
            "per_class_ap50_95": self.per_class_ap50_95, "num_images": self.num_images,
            "num_predictions": self.num_predictions,
        }


def _ground_truth(records: list[Record], class_names: list[str],
                  keep: Callable[[int, int], bool] | None = None) -> COCO:
    """COCO ground truth of ``records``; a box that ``keep(image_index, box_index)`` rejects becomes an ignore
    region (COCO's crowd flag): detections on it count neither for nor against."""
    images, annotations = [], []
    for idx, rec in enumerate(records):
        images.append({"id": idx, "width": rec.width, "height": rec.height, "file_name": rec.image_id})
        for j, (box, cls) in enumerate(zip(rec.boxes, rec.class_ids)):
            x1, y1, x2, y2 = (float(v) for v in box)
            ignored = keep is not None and not keep(idx, j)
            annotations.append({"id": len(annotations) + 1, "image_id": idx, "category_id": int(cls),
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "iscrowd": int(ignored)})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": i, "name": n} for i, n in enumerate(class_names)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def _mean_ap(precision: np.ndarray) -> float:
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else float("nan")


def evaluate_detections(records: list[Record], class_names: list[str], predictions: list[Prediction],
                        max_dets: int = 100, keep: Callable[[int, int], bool] | None = None) -> DetectionMetrics:
    """COCO-style metrics. A class with no ground truth gets NaN AP and is left out of the means. ``keep``
    restricts the ground truth (e.g. to one contrast bin); the other boxes are ignore regions."""
    for p in predictions:
        if not 0 <= p.image_index < len(records):
            raise ValueError(f"prediction refers to image_index {p.image_index}, outside 0..{len(records) - 1}")
        if not 0 <= p.class_id < len(class_names):
            raise ValueError(f"prediction has class_id {p.class_id}, outside 0..{len(class_names) - 1}")
    gt = _ground_truth(records, class_names, keep)
    has_gt = {n: bool(gt.getAnnIds(catIds=[i], iscrowd=False)) for i, n in enumerate(class_names)}
    if not any(a["iscrowd"] == 0 for a in gt.dataset["annotations"]):
        raise ValueError("cannot compute AP: the evaluated records hold no ground-truth box")
    if not predictions:  # nothing detected: every class with ground truth scores 0
        per_class = {n: (0.0 if has_gt[n] else float("nan")) for n in class_names}
        curves = {n: np.zeros(101) for n in class_names if has_gt[n]}
        return DetectionMetrics(0.0, 0.0, per_class, dict(per_class), len(records), 0, curves)
    dets = [{"image_id": p.image_index, "category_id": p.class_id, "score": float(p.score),
             "bbox": [float(p.box[0]), float(p.box[1]), float(p.box[2] - p.box[0]), float(p.box[3] - p.box[1])]}
            for p in predictions]
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
    # precision: [T iou thresholds, R=101 recall points, K classes, A areas, M maxDets]; area "all", last maxDet
    prec = ev.eval["precision"][:, :, :, 0, -1]
    per50, per5095, curves = {}, {}, {}
    for k, name in enumerate(class_names):
        per50[name] = _mean_ap(prec[0, :, k])
        per5095[name] = _mean_ap(prec[:, :, k])
        if has_gt[name]:
            curves[name] = np.where(prec[0, :, k] > -1, prec[0, :, k], 0.0)
    return DetectionMetrics(_mean_ap(prec[0]), _mean_ap(prec), per50, per5095, len(records), len(predictions),
                            curves)


def save_pr_curves(metrics: DetectionMetrics, out_dir: str | Path, title: str = "") -> list[Path]:
    """One PNG per class plus ``pr_all.png``: precision vs recall at IoU 0.5."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recall = np.linspace(0, 1, 101)
    paths = []
    fig_all, ax_all = plt.subplots(figsize=(6, 5))
    for name, precision in metrics.pr_curves.items():
        ap = metrics.per_class_ap50[name]
        label = f"{name} (AP50 {ap:.3f})" if not math.isnan(ap) else name
        ax_all.plot(recall, precision, label=label)
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(recall, precision)
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=f"{title} {label}".strip())
        ax.grid(alpha=0.3)
        path = out_dir / f"pr_{name}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    ax_all.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
               title=f"{title} PR @ IoU 0.5, mAP50 {metrics.map50:.3f}".strip())
    ax_all.grid(alpha=0.3)
    ax_all.legend(fontsize=8, loc="lower left")
    path = out_dir / "pr_all.png"
    fig_all.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig_all)
    paths.append(path)
    return paths


CONTRAST_BINS = {"faint": (0.0, 0.4), "medium": (0.4, 0.7), "strong": (0.7, float("inf"))}


def contrast_bin_metrics(records: list[Record], class_names: list[str], predictions: list[Prediction],
                         contrasts: dict[str, list[float]]) -> dict[str, DetectionMetrics | None]:
    """Metrics per defect-contrast bin of the synthetic data (``contrasts``: image id -> each box's contrast, as
    ``synth.json`` records it); None for a bin without boxes."""
    out: dict[str, DetectionMetrics | None] = {}
    for name, (lo, hi) in CONTRAST_BINS.items():
        def keep(i: int, j: int, lo: float = lo, hi: float = hi) -> bool:
            c = contrasts.get(records[i].image_id, [])
            return j < len(c) and lo <= c[j] < hi

        has_box = any(keep(i, j) for i, r in enumerate(records) for j in range(len(r.boxes)))
        out[name] = evaluate_detections(records, class_names, predictions, keep=keep) if has_box else None
    return out

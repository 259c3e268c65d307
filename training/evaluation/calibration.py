"""``python -m training calibrate``: per-class OK / NG thresholds picked on a labelled set, written into the
package.

The detector runs as it will at the line (one box per defect, every image inspected) at a low threshold. Per
class, each ground-truth box is matched to the best-scoring detection of its class with IoU >= 0.5 (greedy, by
score); a threshold then gives a recall (matched boxes at or above it) and a precision. Two rules:

- ``--target-recall R``: per class, the highest threshold that still finds R of its boxes;
- ``--max-false-alarm F``: per class, the lowest threshold at which at most F / (number of classes) of the
  defect-free images get a detection of that class at or above it, so that at most F of them are called NG.

The thresholds go into the package's metadata (``calibration``), its ``defaults.conf`` becomes the lowest of
them (so that every detection the thresholds judge is reported), checksums are rewritten and a signed package
is signed again (``--sign``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from diffdefect_edge import Detector, load_package
from diffdefect_edge.package import update_metadata
from diffdefect_edge.postprocess import box_iou
from training.data.records import Dataset
from training.data.torch_dataset import read_image
from training.evaluation.package_eval import load_eval_dataset

log = logging.getLogger(__name__)

CALIBRATION_CONF = 0.01  # candidates below this are never a useful NG threshold
MATCH_IOU = 0.5


@dataclass
class ClassScores:
    """One class over the set: the score of each ground-truth box's match (0 when none), every detection's score
    and whether it matched, and per defect-free image its best score."""

    gt_scores: list[float]
    det_scores: list[float]
    det_matched: list[bool]
    clean_best: list[float]


def collect_scores(detector: Detector, dataset: Dataset) -> dict[str, ClassScores]:
    classes = {name: ClassScores([], [], [], []) for name in detector.class_names}
    for rec in tqdm(dataset.records, desc="calibration", leave=False, mininterval=1.0):
        dets = detector(read_image(rec.image_path))
        defect_free = len(rec.boxes) == 0
        for c, name in enumerate(detector.class_names):
            mine = dets[dets.class_ids == c]
            order = np.argsort(-mine.scores, kind="stable")
            boxes, scores = mine.xyxy[order], mine.scores[order]
            gt = rec.boxes[rec.class_ids == c]
            if defect_free:
                classes[name].clean_best.append(float(scores[0]) if len(scores) else 0.0)
            taken = np.zeros(len(gt), bool)
            ious = box_iou(boxes, gt) if len(gt) and len(boxes) else np.zeros((len(boxes), len(gt)))
            for i in range(len(boxes)):
                candidates = np.where(~taken & (ious[i] >= MATCH_IOU))[0] if len(gt) else []
                matched = len(candidates) > 0
                if matched:
                    taken[candidates[np.argmax(ious[i, candidates])]] = True
                classes[name].det_scores.append(float(scores[i]))
                classes[name].det_matched.append(matched)
            best_for_gt = np.zeros(len(gt))
            if len(gt) and len(boxes):
                for j in range(len(gt)):
                    hits = np.where(ious[:, j] >= MATCH_IOU)[0]
                    best_for_gt[j] = scores[hits].max() if len(hits) else 0.0
            classes[name].gt_scores.extend(best_for_gt.tolist())
    return classes


def _at(s: ClassScores, t: float) -> dict[str, float | None]:
    det = np.asarray(s.det_scores) >= t
    matched = np.asarray(s.det_matched, bool)
    recall = float(np.mean(np.asarray(s.gt_scores) >= t)) if s.gt_scores else None
    precision = float(matched[det].mean()) if det.any() else None
    false_alarm = float(np.mean(np.asarray(s.clean_best) >= t)) if s.clean_best else None
    return {"recall": recall, "precision": precision, "false_alarm": false_alarm}


def pick_thresholds(scores: dict[str, ClassScores], rule: str, target: float) -> dict[str, float]:
    if rule not in ("target_recall", "max_false_alarm") or not 0 < target <= 1:
        raise ValueError(f"a rule (target_recall or max_false_alarm) and a target in (0, 1] are needed, got "
                         f"{rule!r} {target!r}")
    out = {}
    for name, s in scores.items():
        if rule == "target_recall":
            found = sorted((v for v in s.gt_scores if v > 0), reverse=True)
            needed = math.ceil(target * len(s.gt_scores)) if s.gt_scores else 0
            if not needed:
                log.warning("calibrate: %s has no labelled box; its threshold stays at %.2f", name, 0.5)
                out[name] = 0.5
            elif len(found) < needed:
                log.warning("calibrate: %s reaches only %d of %d boxes; its threshold is the lowest found", name,
                            len(found), len(s.gt_scores))
                out[name] = found[-1] if found else CALIBRATION_CONF
            else:
                out[name] = found[needed - 1]
        else:
            if not s.clean_best:
                raise ValueError("--max-false-alarm needs defect-free images in the calibration set")
            allowed = target / len(scores)
            clean = np.sort(np.asarray(s.clean_best))[::-1]
            k = int(math.floor(allowed * len(clean)))  # at most k defect-free images may score at or above t
            above = clean[k] if k < len(clean) else 0.0
            out[name] = float(min(1.0, np.nextafter(np.float32(max(above, CALIBRATION_CONF)), np.float32(2))))
    return {k: round(max(CALIBRATION_CONF, min(1.0, v)), 6) for k, v in out.items()}


def calibrate_package(package: str | Path, data: str | Path, rule: str, target: float,
                      split_file: str | Path | None = None, subset: str = "val", sign_key: str | Path | None = None,
                      write: bool = True) -> dict[str, Any]:
    """Pick the thresholds, measure them on the same set, and (``write``) store them in the package."""
    pkg = load_package(package)
    dataset = load_eval_dataset(data, pkg.class_names, split_file, subset)
    with Detector(pkg, conf=CALIBRATION_CONF, health=None) as detector:
        scores = collect_scores(detector, dataset)
    thresholds = pick_thresholds(scores, rule, target)
    per_class = {name: {"threshold": t, **_at(scores[name], t)} for name, t in thresholds.items()}
    clean = [r for r in dataset.records if len(r.boxes) == 0]
    ng_clean = sum(any(scores[n].clean_best[i] >= thresholds[n] for n in thresholds) for i in range(len(clean)))
    summary = {"rule": rule, "target": target, "images": len(dataset.records), "defect_free_images": len(clean),
               "false_alarm_rate": ng_clean / len(clean) if clean else None, "per_class": per_class}
    if write:
        calibration = {"thresholds": thresholds, "rule": rule, "target": target, "images": len(dataset.records),
                       "defect_free_images": len(clean), "dataset": str(data)[:2000]}
        defaults = {**pkg.metadata["defaults"], "conf": min(min(thresholds.values()), pkg.meta.defaults.conf)}
        update_metadata(package, {"calibration": calibration, "defaults": defaults}, sign_key=sign_key)
    return summary


def render(summary: dict[str, Any]) -> str:
    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines = [f"Calibration ({summary['rule']} {summary['target']}) on {summary['images']} images, "
             f"{summary['defect_free_images']} of them defect-free:", "",
             "| class | threshold | precision | recall | false alarms (defect-free images) |", "|---|---:|---:|---:|---:|"]
    for name, r in summary["per_class"].items():
        lines.append(f"| {name} | {r['threshold']:.3f} | {fmt(r['precision'])} | {fmt(r['recall'])} | "
                     f"{fmt(r['false_alarm'])} |")
    lines += ["", f"Defect-free images called NG: {fmt(summary['false_alarm_rate'])}"]
    return "\n".join(lines) + "\n"

"""Evaluation: COCO metrics (pycocotools), torch and package evaluation, the report, the demo, ablations."""

from training.evaluation.metrics import DetectionMetrics, Prediction, evaluate_detections, save_pr_curves

__all__ = ["DetectionMetrics", "Prediction", "evaluate_detections", "save_pr_curves"]

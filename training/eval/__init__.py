"""COCO-style evaluation (pycocotools) of predictions against our records."""

from training.eval.coco_eval import DetectionMetrics, Prediction, evaluate_detections, save_pr_curves

__all__ = ["DetectionMetrics", "Prediction", "evaluate_detections", "save_pr_curves"]

"""Detector family: the lightweight anchor-free detector, its label assignment and losses."""

from training.models.detector import (
    SIZES,
    STRIDES,
    DefectDetector,
    DeployModel,
    DetectorOutput,
    DetectorSpec,
    count_gflops,
    count_parameters,
    make_anchors,
)

__all__ = ["SIZES", "STRIDES", "DefectDetector", "DeployModel", "DetectorOutput", "DetectorSpec", "count_gflops",
           "count_parameters", "make_anchors"]

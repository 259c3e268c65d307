"""Stage ``baseline``: the lightweight anchor-free detector, its label assignment, losses and trainer."""

from training.detector.model import (
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

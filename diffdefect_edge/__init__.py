"""diffdefect-edge: the runtime SDK for industrial surface-defect detection.

Imports numpy, OpenCV and OpenVINO only; torch is never imported at import time (the torch backend imports it
when created).
"""

from __future__ import annotations

__version__ = "0.2.0"

from diffdefect_edge.detections import Detections
from diffdefect_edge.detector import Detector
from diffdefect_edge.package import ModelPackage, PackageError, load_package

__all__ = ["Detections", "Detector", "ModelPackage", "PackageError", "__version__", "load_package"]

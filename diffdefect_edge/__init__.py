"""diffdefect-edge: the runtime SDK for industrial surface-defect detection.

Imports numpy, OpenCV and OpenVINO only; torch is never imported at import time.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]

"""Detector checkpoints: the spec, class names and config a detector is rebuilt from, beside its weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from training.detector.model import DefectDetector, DetectorSpec
from training.engine.checkpoint import CheckpointError, load_strict, read_meta


def load_detector(path: str | Path) -> tuple[DefectDetector, dict[str, Any]]:
    """Rebuild the detector a checkpoint was saved from and load its weights (strict)."""
    meta = read_meta(path)
    try:
        spec = DetectorSpec(**meta["spec"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: checkpoint metadata has no valid model spec ({exc})") from None
    return load_strict(DefectDetector(spec), path, "model"), meta


def load_detector_with_spec(path: str | Path, spec: DetectorSpec) -> DefectDetector:
    """A trained detector to start a stage from, refused by name when its layout is not ``spec``'s."""
    detector, _ = load_detector(path)
    if detector.spec != spec:
        raise ValueError(f"{path}: detector {detector.spec} differs from the configured {spec}")
    return detector


def checkpoint_meta(spec: DetectorSpec, class_names: list[str], config: dict[str, Any],
                    **extra: Any) -> dict[str, Any]:
    return {"spec": dataclasses.asdict(spec), "class_names": list(class_names), "config": config, **extra}

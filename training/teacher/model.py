"""The teacher: the detector with :class:`~training.teacher.fusion.Fusion` of the DDPM features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.config import ExperimentConfig
from training.detector import DefectDetector, DetectorOutput, DetectorSpec
from training.engine.checkpoint import load_strict, read_kind_meta
from training.teacher.fusion import Fusion


class TeacherDetector(nn.Module):
    """A :class:`DefectDetector` whose neck levels are rewritten by :class:`Fusion` before the heads."""

    def __init__(self, spec: DetectorSpec, ddpm_channels: int, grid: int, fusion: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        self.detector = DefectDetector(spec)
        self.fusion = Fusion(ddpm_channels, grid, self.detector.feature_channels, **fusion)

    def forward(self, x: torch.Tensor, ddpm: torch.Tensor) -> DetectorOutput:
        return self.detector(x, fuse=lambda feats: self.fusion(feats, ddpm))

    def decode(self, out: DetectorOutput, input_size: int) -> torch.Tensor:
        return self.detector.decode(out, input_size)


def fusion_options(config: ExperimentConfig) -> dict[str, Any]:
    t = config.teacher
    return {"levels": list(t.levels), "heads": t.heads, "fft_filter": t.fft_filter,
            "learnable_filter": t.learnable_filter, "filter_sigma": t.filter_sigma, "gate": t.gate, "impl": t.impl}


def load_teacher(path: str | Path, impl: str | None = None) -> tuple[TeacherDetector, dict[str, Any]]:
    """Rebuild a teacher from its checkpoint (optionally switching its ops to ``impl``)."""
    meta = read_kind_meta(path, "teacher", "teacher")
    fusion = dict(meta["fusion"])
    if impl is not None:
        fusion["impl"] = impl
    model = TeacherDetector(DetectorSpec(**meta["spec"]), meta["ddpm_channels"], meta["grid"], fusion)
    return load_strict(model, path, "teacher"), meta

"""Stage ``continued``: the trained baseline given the teacher's extra epochs, the control for them.

The teacher starts from the baseline's weights and trains ``teacher.epochs`` more at ``teacher.lr``. This trainer
does exactly that without the DDPM features or the fusion, so ``teacher - continued`` is what the features add
beyond the extra supervised epochs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from training.config import ExperimentConfig
from training.data.records import Dataset
from training.detector import DefectDetector
from training.detector.checkpoint import load_detector_with_spec
from training.detector.trainer import TeacherSchedule, Trainer


class ContinuedBaselineTrainer(TeacherSchedule, Trainer):  # the teacher's schedule: they differ by the features
    def __init__(self, config: ExperimentConfig, train_set: Dataset, val_set: Dataset, run_dir: str | Path,
                 baseline_weights: str | Path, resume: bool | str = "auto",
                 dataset_info: dict[str, Any] | None = None) -> None:
        super().__init__(config, train_set, val_set, run_dir, resume, dataset_info)
        self.baseline_weights = Path(baseline_weights)

    @property
    def warmup_bias_lr(self) -> float | None:  # it starts from trained weights
        return None

    def build_model(self) -> DefectDetector:
        torch.manual_seed(self.config.detector_seed)
        return load_detector_with_spec(self.baseline_weights, self.spec)

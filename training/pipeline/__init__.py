"""The main job (``python -m training run``): resumable stages under one run directory."""

from training.pipeline.context import RunContext, dataset_path, load_split, write_configured_synthetic
from training.pipeline.runner import run_pipeline, stage_key
from training.pipeline.stages import STAGE_NAMES, STAGES

__all__ = ["STAGES", "STAGE_NAMES", "RunContext", "dataset_path", "load_split", "run_pipeline", "stage_key",
           "write_configured_synthetic"]

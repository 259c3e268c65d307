"""The run directory of the main job and what every stage reads from it (config, dataset, split, features)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from training.config import ExperimentConfig
from training.data import Dataset, SynthConfig, load_dataset, write_synthetic_dataset


@dataclass
class RunContext:
    config: ExperimentConfig
    run_dir: Path
    data_override: Path | None = None
    keys: dict[str, str] = field(default_factory=dict)  # each stage's key, set by the runner before it runs

    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage


def dataset_path(ctx: RunContext) -> Path:
    if ctx.data_override is not None:
        return ctx.data_override
    if ctx.config.data.source == "synthetic":
        return ctx.stage_dir("data") / "synthetic"
    return Path(ctx.config.data.source)


def load_run_dataset(ctx: RunContext) -> Dataset:
    cfg = ctx.config.data
    return load_dataset(dataset_path(ctx), format=cfg.format, class_names=cfg.class_names, on_error=cfg.on_error)


def load_split(ctx: RunContext) -> tuple[Dataset, Dataset]:
    """The (train, val) split the data stage wrote."""
    dataset = load_run_dataset(ctx)
    split = json.loads((ctx.stage_dir("data") / "split.json").read_text())
    by_id = {r.image_id: i for i, r in enumerate(dataset.records)}
    return dataset.subset([by_id[i] for i in split["train"]]), dataset.subset([by_id[i] for i in split["val"]])


def write_configured_synthetic(config: ExperimentConfig, out: Path) -> Path:
    """Write the synthetic dataset a config's ``data.synthetic`` section describes (seeded by ``config.seed``)."""
    s = config.data.synthetic
    synth = SynthConfig(num_images=s.num_images, size=s.size, seed=config.seed, contrast=s.contrast,
                        max_defects=s.max_defects, background_fraction=s.background_fraction)
    return write_synthetic_dataset(out, synth, overwrite=True)


def raw_repository(ctx: RunContext):
    from training.repository.store import FeatureRepository

    return FeatureRepository(ctx.stage_dir("features") / "raw")


def feature_source(ctx: RunContext):
    """What the teacher reads: the latent repository (or the raw one when ``resvae.enabled`` is false)."""
    from training.repository.store import FeatureRepository
    from training.teacher.feature_source import FeatureSource

    repo = FeatureRepository(ctx.stage_dir("resvae") / "latents") if ctx.config.resvae.enabled else raw_repository(ctx)
    return FeatureSource(repo, ctx.stage_dir("resvae") / "resvae.safetensors")

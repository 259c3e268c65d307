"""The main job: resumable stages writing under one run directory.

Each stage records the hash of the config sections it depends on in ``RUN/<stage>/stage.json``; a rerun
with the same hash skips it (a stage's hash covers every config section its inputs depend on, so a change
reruns it and everything after it). Stages:

    data      synthesize or load, validate, split, statistics            -> RUN/data/{split,stats}.json
    ddpm      UNet DDPM on the training images, sample grid              -> RUN/ddpm/{ddpm.safetensors,samples.png}
    features  DDPM activations of every image (raw feature repository)  -> RUN/features/raw/
    resvae    ResVAE on the raw features; latent repository (fp16)       -> RUN/resvae/{resvae.safetensors,latents/}
    baseline  the student architecture trained alone (the control)       -> RUN/baseline/weights/*.safetensors
    teacher   detector + FFT-filtered dynamic cross-attention fusion     -> RUN/teacher/weights/*.safetensors
              (by default its detector starts from the baseline and the whole teacher is fine-tuned)
    distill   the student trained from the frozen teacher                -> RUN/distill/weights/*.safetensors
    export    the student's model package (+ the baseline's, FP32)       -> RUN/package/, RUN/export/
    report    baseline / teacher / student / INT8 table and plots        -> RUN/report/report.md
    demo      the package in the camera loop over a generated video      -> RUN/demo/
Training stages resume from their last epoch when interrupted.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.config import ExperimentConfig, save_config
from training.data import Dataset, SynthConfig, load_dataset, split_dataset, write_synthetic_dataset

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    config: ExperimentConfig
    run_dir: Path
    data_override: Path | None = None

    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage


@dataclass(frozen=True)
class Stage:
    name: str
    depends_on: tuple[str, ...]  # config sections whose change reruns the stage
    fn: Callable[[RunContext], dict[str, Any]]


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


def stage_data(ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.config.data
    if ctx.data_override is None and cfg.source == "synthetic":
        write_configured_synthetic(ctx.config, dataset_path(ctx))
    dataset = load_run_dataset(ctx)
    if dataset.skip_report:
        log.warning(dataset.skip_report.summary())
    train, val = split_dataset(dataset, cfg.val_fraction, seed=ctx.config.seed)
    out = ctx.stage_dir("data")
    split = {"class_names": dataset.class_names, "train": [r.image_id for r in train.records],
             "val": [r.image_id for r in val.records]}
    (out / "split.json").write_text(json.dumps(split, indent=1))
    stats = {"all": dataset.stats(), "train": train.stats(), "val": val.stats()}
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    return {"dataset": str(dataset_path(ctx)), "num_train": len(train), "num_val": len(val),
            "num_boxes": stats["all"]["num_boxes"], "boxes_per_class": stats["all"]["boxes_per_class"]}


def stage_ddpm(ctx: RunContext) -> dict[str, Any]:
    from training.ddpm import train_ddpm

    train, _ = load_split(ctx)
    cfg = ctx.config
    res = train_ddpm(cfg.ddpm, train.records, cfg.model.input_size, ctx.stage_dir("ddpm"), seed=cfg.seed,
                     config_hash=cfg.section_hash(*DDPM_SECTIONS))
    return {"weights": str(res.weights), "samples": str(res.samples), "final_loss": round(res.final_loss, 5),
            "seconds_per_epoch": round(res.seconds_per_epoch, 2), "parameters": res.parameters}


def stage_features(ctx: RunContext) -> dict[str, Any]:
    from training.features import build_feature_repository

    cfg = ctx.config
    train, val = load_split(ctx)
    repo = build_feature_repository(ctx.stage_dir("ddpm") / "ddpm.safetensors", train.records + val.records,
                                    cfg.model.input_size, cfg.features, ctx.stage_dir("features") / "raw",
                                    seed=cfg.seed, build_key=cfg.section_hash(*FEATURE_SECTIONS))
    shape = repo.shape("features")
    return {"repository": str(repo.root), "images": len(repo), "shape": list(shape),
            "bytes_per_image_fp32": int(np.prod(shape)) * 4}


def raw_repository(ctx: RunContext):
    from training.repository import FeatureRepository

    return FeatureRepository(ctx.stage_dir("features") / "raw")


def stage_resvae(ctx: RunContext) -> dict[str, Any]:
    from training.latents import (
        channel_statistics,
        compression_ratio,
        encode_repository,
        reconstruction_quality,
        save_resvae,
        train_resvae,
    )
    from training.models.resvae import ResVAE, ResVAESpec

    cfg = ctx.config
    raw = raw_repository(ctx)
    train, val = load_split(ctx)
    out = ctx.stage_dir("resvae")
    provenance = {"raw_repository": str(raw.root), "ddpm": str(ctx.stage_dir("ddpm") / "ddpm.safetensors")}
    if not cfg.resvae.enabled:  # ablation: the teacher reads raw features, standardised with these statistics
        stats = ResVAE(ResVAESpec(in_channels=raw.shape("features")[0]))
        stats.set_statistics(*channel_statistics(raw, raw.rows_of([r.image_id for r in train.records])))
        save_resvae(stats, out / "resvae.safetensors", {**provenance, "trained": False})
        return {"enabled": False, "weights": str(out / "resvae.safetensors")}
    model, seconds_per_epoch = train_resvae(cfg.resvae, raw, [r.image_id for r in train.records], out, seed=cfg.seed)
    save_resvae(model, out / "resvae.safetensors", {**provenance, "trained": True})
    latents = encode_repository(model, raw, out / "latents", build_key=cfg.section_hash(*RESVAE_SECTIONS))
    cos_raw, cos_std = reconstruction_quality(model, raw, latents, [r.image_id for r in val.records])
    return {"enabled": True, "weights": str(out / "resvae.safetensors"), "latents": str(latents.root),
            "latent_shape": list(latents.shape("latents")),
            "compression_vs_fp32": round(compression_ratio(raw, latents), 1),
            "val_cosine": round(cos_raw, 4), "val_cosine_standardized": round(cos_std, 4),
            "seconds_per_epoch": round(seconds_per_epoch, 2)}


def feature_source(ctx: RunContext):
    """What the teacher reads: the latent repository (or the raw one when ``resvae.enabled`` is false)."""
    from training.repository import FeatureRepository
    from training.teacher import FeatureSource

    repo = FeatureRepository(ctx.stage_dir("resvae") / "latents") if ctx.config.resvae.enabled else raw_repository(ctx)
    return FeatureSource(repo, ctx.stage_dir("resvae") / "resvae.safetensors")


def _train_info(ctx: RunContext) -> dict[str, Any]:
    return {"path": str(dataset_path(ctx).resolve()), "format": ctx.config.data.format}


def _fit_summary(result) -> dict[str, Any]:
    return {"best_epoch": result.best_epoch, "map50": result.best_metrics.get("map50"),
            "map50_95": result.best_metrics.get("map50_95"), "seconds_per_epoch": round(result.seconds_per_epoch, 2),
            "parameters": result.parameters}


def stage_teacher(ctx: RunContext) -> dict[str, Any]:
    from training.teacher import TeacherTrainer

    train, val = load_split(ctx)
    init = ctx.stage_dir("baseline") / "weights" / "best.safetensors" if ctx.config.teacher.init_from_baseline else None
    trainer = TeacherTrainer(ctx.config, train, val, ctx.stage_dir("teacher"), feature_source(ctx), resume="auto",
                             dataset_info=_train_info(ctx), init_weights=init)
    return _fit_summary(trainer.fit())


def stage_baseline(ctx: RunContext) -> dict[str, Any]:
    from training.train import Trainer

    train, val = load_split(ctx)
    return _fit_summary(Trainer(ctx.config, train, val, ctx.stage_dir("baseline"), resume="auto",
                                dataset_info=_train_info(ctx)).fit())


def stage_distill(ctx: RunContext) -> dict[str, Any]:
    from training.distill import DistillTrainer

    train, val = load_split(ctx)
    trainer = DistillTrainer(ctx.config, train, val, ctx.stage_dir("distill"),
                             ctx.stage_dir("teacher") / "weights" / "best.safetensors", feature_source(ctx),
                             resume="auto", dataset_info=_train_info(ctx))
    return _fit_summary(trainer.fit())


def stage_export(ctx: RunContext) -> dict[str, Any]:
    from training.export import export_package

    cfg = ctx.config.export
    pkg = export_package(ctx.stage_dir("distill"), ctx.stage_dir("package"), int8=cfg.int8, fp16=cfg.fp16,
                         calibration_images=cfg.calibration_images, calib_data=dataset_path(ctx), overwrite=True)
    # the baseline in FP32 too, so the report measures both on the same runtime in the same run
    base = export_package(ctx.stage_dir("baseline"), ctx.stage_dir("export") / "baseline-package", int8=False,
                          calib_data=dataset_path(ctx), overwrite=True)
    return {"package": str(pkg.path), "models": [f"{m.backend}/{m.precision}" for m in pkg.models],
            "baseline_package": str(base.path)}


def stage_report(ctx: RunContext) -> dict[str, Any]:
    from training.report import write_report

    return write_report(ctx)


def stage_demo(ctx: RunContext) -> dict[str, Any]:
    from training.report import camera_loop_demo

    return camera_loop_demo(ctx)


TRAIN_SECTIONS = ("data", "model", "train")
DDPM_SECTIONS = ("data", "model", "ddpm")
FEATURE_SECTIONS = DDPM_SECTIONS + ("features",)
RESVAE_SECTIONS = FEATURE_SECTIONS + ("resvae",)
TEACHER_SECTIONS = RESVAE_SECTIONS + ("train", "teacher")
DISTILL_SECTIONS = TEACHER_SECTIONS + ("distill",)
STAGES: list[Stage] = [
    Stage("data", ("data",), stage_data),
    Stage("ddpm", DDPM_SECTIONS, stage_ddpm),
    Stage("features", FEATURE_SECTIONS, stage_features),
    Stage("resvae", RESVAE_SECTIONS, stage_resvae),
    Stage("baseline", TRAIN_SECTIONS, stage_baseline),
    Stage("teacher", TEACHER_SECTIONS, stage_teacher),
    Stage("distill", DISTILL_SECTIONS, stage_distill),
    Stage("export", DISTILL_SECTIONS + ("export",), stage_export),
    Stage("report", DISTILL_SECTIONS + ("export",), stage_report),
    Stage("demo", DISTILL_SECTIONS + ("export",), stage_demo),
]
STAGE_NAMES = [s.name for s in STAGES]


def _stage_hash(ctx: RunContext, stage: Stage) -> str:
    override = str(ctx.data_override.resolve()) if ctx.data_override else None
    return ctx.config.section_hash(*stage.depends_on, extra={"data_override": override})


def run_pipeline(config: ExperimentConfig, run_dir: str | Path, stages: list[str] | None = None,
                 data_override: str | Path | None = None, force: bool = False) -> dict[str, dict[str, Any]]:
    """Run the named stages (default: all) in order; skip those already done with the same config.

    ``force`` reruns the named stages from scratch: each one's directory is cleared first.
    """
    unknown = set(stages or []) - set(STAGE_NAMES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; stages are {STAGE_NAMES}")
    ctx = RunContext(config, Path(run_dir), Path(data_override) if data_override else None)
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, ctx.run_dir / "config.yaml")
    results: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        if stages and stage.name not in stages:
            continue
        marker = ctx.stage_dir(stage.name) / "stage.json"
        digest = _stage_hash(ctx, stage)
        if not force and marker.is_file():
            done = json.loads(marker.read_text())
            if done.get("config_hash") == digest:
                log.info("stage %s: already done with this config, skipped", stage.name)
                results[stage.name] = {**done["result"], "skipped": True}
                continue
        if force and ctx.stage_dir(stage.name).exists():
            # from scratch: a training stage would otherwise resume from the old run's last epoch and do nothing
            shutil.rmtree(ctx.stage_dir(stage.name))
        ctx.stage_dir(stage.name).mkdir(parents=True, exist_ok=True)
        marker.unlink(missing_ok=True)
        start = time.perf_counter()
        log.info("stage %s: running", stage.name)
        result = stage.fn(ctx)
        elapsed = time.perf_counter() - start
        marker.write_text(json.dumps({"config_hash": digest, "seconds": round(elapsed, 3), "result": result}, indent=1))
        results[stage.name] = {**result, "seconds": round(elapsed, 3)}
    return results

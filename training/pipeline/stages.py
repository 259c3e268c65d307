"""The stages of the main job, in order, with the config sections and upstream stages each one reads.

    data      synthesize or load, validate, split, statistics            -> RUN/data/{split,stats}.json
    ddpm      UNet DDPM on the training images, sample grid              -> RUN/ddpm/{ddpm.safetensors,samples.png}
    features  DDPM activations of every image (raw feature repository)  -> RUN/features/raw/
    resvae    ResVAE on the raw features; latent repository (fp16)       -> RUN/resvae/{resvae.safetensors,latents/}
    baseline  the student architecture trained alone (the control)       -> RUN/baseline/weights/*.safetensors
    continued the baseline trained on for the teacher's epochs, no DDPM    -> RUN/continued/weights/*.safetensors
              (optional: the control for the teacher's extra epochs; run only when named)
    teacher   detector + FFT-filtered dynamic cross-attention fusion     -> RUN/teacher/weights/*.safetensors
              (by default its detector starts from the baseline and the whole teacher is fine-tuned)
    distill   the student trained from the frozen teacher                -> RUN/distill/weights/*.safetensors
    export    the student's model package (+ the baseline's, FP32)       -> RUN/package/, RUN/export/
    report    baseline / teacher / student / INT8 table and plots        -> RUN/report/report.md
    demo      the package in the camera loop over a generated video      -> RUN/demo/

:mod:`training.pipeline.runner` decides which to run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.config import ExperimentConfig
from training.data import split_dataset
from training.pipeline.context import (
    RunContext,
    dataset_path,
    feature_source,
    load_run_dataset,
    load_split,
    raw_repository,
    write_configured_synthetic,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    name: str
    depends_on: tuple[str, ...]  # config sections whose change reruns the stage
    fn: Callable[[RunContext], dict[str, Any]]
    inputs: tuple[str, ...] = ()  # upstream stages whose outputs it reads
    outputs: tuple[str, ...] = ()  # run-directory folders it writes (default: its own)
    optional: bool = False  # runs only when named (a control for compare / ablate), never by default
    # upstream stages read only under some configs (the distillation control reads the continued baseline)
    config_inputs: Callable[[ExperimentConfig], tuple[str, ...]] | None = None

    def inputs_for(self, config: ExperimentConfig) -> tuple[str, ...]:
        """The upstream stages whose outputs this stage reads under ``config``."""
        return self.inputs + (self.config_inputs(config) if self.config_inputs else ())

    @property
    def output_dirs(self) -> tuple[str, ...]:
        return self.outputs or (self.name,)


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
    from training.diffusion.ddpm import train_ddpm

    train, _ = load_split(ctx)
    cfg = ctx.config
    res = train_ddpm(cfg.ddpm, train.records, cfg.model.input_size, ctx.stage_dir("ddpm"), seed=cfg.seed,
                     config_hash=ctx.keys["ddpm"], threads=cfg.train.num_threads or None)
    return {"weights": str(res.weights), "samples": str(res.samples), "final_loss": round(res.final_loss, 5),
            "seconds_per_epoch": round(res.seconds_per_epoch, 2), "parameters": res.parameters}


def stage_features(ctx: RunContext) -> dict[str, Any]:
    from training.diffusion.features import build_feature_repository

    cfg = ctx.config
    train, val = load_split(ctx)
    repo = build_feature_repository(ctx.stage_dir("ddpm") / "ddpm.safetensors", train.records + val.records,
                                    cfg.model.input_size, cfg.features, ctx.stage_dir("features") / "raw",
                                    seed=cfg.seed, build_key=ctx.keys["features"])
    shape = repo.shape("features")
    return {"repository": str(repo.root), "images": len(repo), "shape": list(shape),
            "bytes_per_image_fp32": int(np.prod(shape)) * 4}


def stage_resvae(ctx: RunContext) -> dict[str, Any]:
    from training.repository.latents import (
        channel_statistics,
        compression_ratio,
        encode_repository,
        reconstruction_quality,
        save_resvae,
        train_resvae,
    )
    from training.repository.resvae import ResVAE, ResVAESpec

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
    model, seconds_per_epoch = train_resvae(cfg.resvae, raw, [r.image_id for r in train.records], out, seed=cfg.seed,
                                             config_hash=ctx.keys["resvae"], threads=cfg.train.num_threads or None)
    save_resvae(model, out / "resvae.safetensors", {**provenance, "trained": True})
    latents = encode_repository(model, raw, out / "latents", build_key=ctx.keys["resvae"])
    cos_raw, cos_std = reconstruction_quality(model, raw, latents, [r.image_id for r in val.records])
    return {"enabled": True, "weights": str(out / "resvae.safetensors"), "latents": str(latents.root),
            "latent_shape": list(latents.shape("latents")),
            "compression_vs_fp32": round(compression_ratio(raw, latents), 1),
            "val_cosine": round(cos_raw, 4), "val_cosine_standardized": round(cos_std, 4),
            "seconds_per_epoch": round(seconds_per_epoch, 2)}


def _train_info(ctx: RunContext) -> dict[str, Any]:
    return {"path": str(dataset_path(ctx).resolve()), "format": ctx.config.data.format}


def _fit_summary(result) -> dict[str, Any]:
    return {"best_epoch": result.best_epoch, "map50": result.best_metrics.get("map50"),
            "map50_95": result.best_metrics.get("map50_95"), "seconds_per_epoch": round(result.seconds_per_epoch, 2),
            "seconds_per_validation": round(result.seconds_per_validation, 2),
            "parameters": result.parameters}


def stage_teacher(ctx: RunContext) -> dict[str, Any]:
    from training.teacher.trainer import TeacherTrainer

    train, val = load_split(ctx)
    init = ctx.stage_dir("baseline") / "weights" / "best.safetensors" if ctx.config.teacher.init_from_baseline else None
    trainer = TeacherTrainer(ctx.config, train, val, ctx.stage_dir("teacher"), feature_source(ctx), resume="auto",
                             dataset_info=_train_info(ctx), init_weights=init)
    return _fit_summary(trainer.fit())


def stage_baseline(ctx: RunContext) -> dict[str, Any]:
    from training.detector.trainer import Trainer

    train, val = load_split(ctx)
    return _fit_summary(Trainer(ctx.config, train, val, ctx.stage_dir("baseline"), resume="auto",
                                dataset_info=_train_info(ctx)).fit())


def stage_continued(ctx: RunContext) -> dict[str, Any]:
    from training.detector.continued import ContinuedBaselineTrainer

    train, val = load_split(ctx)
    trainer = ContinuedBaselineTrainer(ctx.config, train, val, ctx.stage_dir("continued"),
                                       ctx.stage_dir("baseline") / "weights" / "best.safetensors", resume="auto",
                                       dataset_info=_train_info(ctx))
    return _fit_summary(trainer.fit())


# distill.teacher values that name a plain detector stage (no DDPM features) to distil from
PLAIN_TEACHER_STAGES = ("baseline", "continued")


def stage_distill(ctx: RunContext) -> dict[str, Any]:
    from training.distill.trainer import DistillTrainer

    train, val = load_split(ctx)
    if ctx.config.distill.teacher in PLAIN_TEACHER_STAGES:  # the control: no DDPM features anywhere
        teacher, source = ctx.stage_dir(ctx.config.distill.teacher) / "weights" / "best.safetensors", None
    else:
        teacher, source = ctx.stage_dir("teacher") / "weights" / "best.safetensors", feature_source(ctx)
    trainer = DistillTrainer(ctx.config, train, val, ctx.stage_dir("distill"), teacher, source, resume="auto",
                             dataset_info=_train_info(ctx))
    return _fit_summary(trainer.fit())


def stage_export(ctx: RunContext) -> dict[str, Any]:
    from training.export.package import export_package

    cfg = ctx.config.export
    pkg = export_package(ctx.stage_dir("distill"), ctx.stage_dir("package"), int8=cfg.int8, fp16=cfg.fp16,
                         calibration_images=cfg.calibration_images, calib_data=dataset_path(ctx), overwrite=True)
    # the baseline in FP32 too, so the report measures both on the same runtime in the same run
    base = export_package(ctx.stage_dir("baseline"), ctx.stage_dir("export") / "baseline-package", int8=False,
                          calib_data=dataset_path(ctx), overwrite=True)
    return {"package": str(pkg.path), "models": [f"{m.backend}/{m.precision}" for m in pkg.models],
            "baseline_package": str(base.path)}


def stage_report(ctx: RunContext) -> dict[str, Any]:
    from training.evaluation.report import write_report

    return write_report(ctx, STAGE_NAMES)


def stage_demo(ctx: RunContext) -> dict[str, Any]:
    from training.evaluation.demo import camera_loop_demo

    return camera_loop_demo(ctx)


TRAIN_SECTIONS = ("data", "model", "train")
DDPM_SECTIONS = ("data", "model", "ddpm")
FEATURE_SECTIONS = DDPM_SECTIONS + ("features",)
RESVAE_SECTIONS = FEATURE_SECTIONS + ("resvae",)
TEACHER_SECTIONS = RESVAE_SECTIONS + ("train", "teacher")
DISTILL_SECTIONS = TEACHER_SECTIONS + ("distill",)
STAGES: list[Stage] = [
    Stage("data", ("data",), stage_data),
    Stage("ddpm", DDPM_SECTIONS, stage_ddpm, inputs=("data",)),
    Stage("features", FEATURE_SECTIONS, stage_features, inputs=("data", "ddpm")),
    Stage("resvae", RESVAE_SECTIONS, stage_resvae, inputs=("data", "features")),
    Stage("baseline", TRAIN_SECTIONS, stage_baseline, inputs=("data",)),
    Stage("continued", TRAIN_SECTIONS + ("teacher",), stage_continued, inputs=("data", "baseline"), optional=True),
    Stage("teacher", TEACHER_SECTIONS, stage_teacher, inputs=("data", "features", "resvae", "baseline")),
    Stage("distill", DISTILL_SECTIONS, stage_distill, inputs=("data", "features", "resvae", "baseline", "teacher"),
          config_inputs=lambda cfg: ("continued",) if cfg.distill.teacher == "continued" else ()),
    Stage("export", DISTILL_SECTIONS + ("export",), stage_export, inputs=("data", "baseline", "distill"),
          outputs=("export", "package")),
    Stage("report", DISTILL_SECTIONS + ("export",), stage_report,
          inputs=("data", "ddpm", "features", "resvae", "teacher", "export")),
    Stage("demo", DISTILL_SECTIONS + ("export",), stage_demo, inputs=("data", "export")),
]
STAGE_NAMES = [s.name for s in STAGES]
STAGES_BY_NAME = {s.name: s for s in STAGES}

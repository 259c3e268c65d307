"""The main job: resumable stages writing under one run directory.

Each stage records the hash of the config sections it depends on in ``RUN/<stage>/stage.json``; a rerun
with the same hash skips it. Stages so far:

    data      synthesize or load, validate, split, statistics      -> RUN/data/{split,stats}.json
    baseline  the student detector trained alone (resumes if cut)   -> RUN/baseline/weights/*.safetensors
    export    OpenVINO FP32/INT8 IR, ONNX, torch.export + metadata   -> RUN/package/
    eval      the package on the validation split, every precision  -> RUN/report/{metrics.json,report.md}
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def stage_baseline(ctx: RunContext) -> dict[str, Any]:
    from training.train import Trainer

    train, val = load_split(ctx)
    info = {"path": str(dataset_path(ctx).resolve()), "format": ctx.config.data.format}
    result = Trainer(ctx.config, train, val, ctx.stage_dir("baseline"), resume="auto", dataset_info=info).fit()
    return {"best_epoch": result.best_epoch, "map50": result.best_metrics.get("map50"),
            "map50_95": result.best_metrics.get("map50_95"), "seconds_per_epoch": round(result.seconds_per_epoch, 2),
            "parameters": result.parameters}


def stage_export(ctx: RunContext) -> dict[str, Any]:
    from training.export import export_package

    cfg = ctx.config.export
    pkg = export_package(ctx.stage_dir("baseline"), ctx.stage_dir("package"), int8=cfg.int8, fp16=cfg.fp16,
                         calibration_images=cfg.calibration_images, calib_data=dataset_path(ctx), overwrite=True)
    return {"package": str(pkg.path), "models": [f"{m.backend}/{m.precision}" for m in pkg.models]}


def stage_eval(ctx: RunContext) -> dict[str, Any]:
    from training.evaluate import evaluate_package

    summary = evaluate_package(ctx.stage_dir("package"), dataset_path(ctx), ctx.stage_dir("report"),
                               split_file=ctx.stage_dir("data") / "split.json", subset="val")
    out = {"map50": round(summary["map50"], 4), "map50_95": round(summary["map50_95"], 4),
           "report": str(ctx.stage_dir("report") / "report.md")}
    if "int8_vs_fp32" in summary:
        out["int8_vs_fp32"] = summary["int8_vs_fp32"]
    return out


TRAIN_SECTIONS = ("data", "model", "train")
STAGES: list[Stage] = [
    Stage("data", ("data",), stage_data),
    Stage("baseline", TRAIN_SECTIONS, stage_baseline),
    Stage("export", TRAIN_SECTIONS + ("export",), stage_export),
    Stage("eval", TRAIN_SECTIONS + ("export",), stage_eval),
]
STAGE_NAMES = [s.name for s in STAGES]


def _stage_hash(ctx: RunContext, stage: Stage) -> str:
    override = str(ctx.data_override.resolve()) if ctx.data_override else None
    return ctx.config.section_hash(*stage.depends_on, extra={"data_override": override})


def run_pipeline(config: ExperimentConfig, run_dir: str | Path, stages: list[str] | None = None,
                 data_override: str | Path | None = None, force: bool = False) -> dict[str, dict[str, Any]]:
    """Run the named stages (default: all) in order; skip those already done with the same config."""
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
        ctx.stage_dir(stage.name).mkdir(parents=True, exist_ok=True)
        marker.unlink(missing_ok=True)
        start = time.perf_counter()
        log.info("stage %s: running", stage.name)
        result = stage.fn(ctx)
        elapsed = time.perf_counter() - start
        marker.write_text(json.dumps({"config_hash": digest, "seconds": round(elapsed, 3), "result": result}, indent=1))
        results[stage.name] = {**result, "seconds": round(elapsed, 3)}
    return results

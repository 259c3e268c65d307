"""``python -m training ablate``: the ablation grid of the method, one table.

Variants (each a config override of the base config):

    full              the method as configured
    no_fft_filter     teacher without the FFT noise filter
    no_resvae         teacher reads the raw DDPM features (no ResVAE compression)
    no_gate           attended signal added back with weight 1 (no dynamic gate)
    feature_kd_only   distillation without the response term
    response_kd_only  distillation without the feature term

Each variant runs in ``RUN/ablate/<variant>``; stages whose config is unchanged (data, DDPM, features, and
wherever possible ResVAE, teacher, baseline) are linked from the base run instead of being recomputed. The
teacher and the student are evaluated with torch on the validation split (the same decoding as the SDK).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

from training.config import ExperimentConfig, config_from_dict
from training.evaluation.report import evaluate_checkpoint, evaluate_teacher

log = logging.getLogger(__name__)

ABLATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {},
    "no_fft_filter": {"teacher": {"fft_filter": False}},
    "no_resvae": {"resvae": {"enabled": False}},
    "no_gate": {"teacher": {"gate": False}},
    "feature_kd_only": {"distill": {"response_weight": 0.0}},
    "response_kd_only": {"distill": {"feature_weight": 0.0}},
}
TRAINING_STAGES = ["data", "ddpm", "features", "resvae", "teacher", "baseline", "distill"]


def variant_config(base: ExperimentConfig, overrides: dict[str, dict[str, Any]]) -> ExperimentConfig:
    values = copy.deepcopy(base.to_dict())
    for section, changes in overrides.items():
        values[section].update(changes)
    return config_from_dict(json.loads(json.dumps(values)), where=f"ablation {overrides}")


def link_unchanged_stages(base_ctx, ctx) -> list[str]:
    """Symlink the base run's stages that the variant would compute identically; returns their names."""
    from training.pipeline.runner import completed_key, stage_key
    from training.pipeline.stages import STAGES

    linked = []
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    for stage in STAGES:
        if stage.name not in TRAINING_STAGES:
            continue
        target = ctx.stage_dir(stage.name)
        if target.is_symlink() or target.exists():
            if target.is_symlink():
                linked.append(stage.name)
            continue
        if completed_key(base_ctx, stage) == stage_key(ctx, stage):
            os.symlink(base_ctx.stage_dir(stage.name).resolve(), target, target_is_directory=True)
            linked.append(stage.name)
    return linked


def evaluate_run(ctx) -> dict[str, float]:
    """Teacher and student mAP on the validation split (torch)."""
    from training.pipeline import load_split

    _, val = load_split(ctx)
    t = evaluate_teacher(ctx, val.records, val.class_names)[0]
    s = evaluate_checkpoint(ctx.stage_dir("distill") / "weights" / "best.safetensors", val.records, val.class_names)
    return {"teacher_map50": t.map50, "teacher_map50_95": t.map50_95, "student_map50": s.map50,
            "student_map50_95": s.map50_95}


def run_ablations(config: ExperimentConfig, run_dir: str | Path, variants: list[str] | None = None,
                  data_override: str | Path | None = None) -> Path:
    """Run the grid; write ``RUN/ablate/ablation.md`` and ``ablation.json``; return the markdown path."""
    from training.pipeline import RunContext, load_split, run_pipeline

    names = variants or list(ABLATIONS)
    unknown = set(names) - set(ABLATIONS)
    if unknown:
        raise ValueError(f"unknown ablation(s) {sorted(unknown)}; known: {list(ABLATIONS)}")
    run_dir = Path(run_dir)
    override = Path(data_override) if data_override else None
    base_ctx = RunContext(config, run_dir, override)
    run_pipeline(config, run_dir, stages=TRAINING_STAGES, data_override=override)
    _, val = load_split(base_ctx)
    b = evaluate_checkpoint(base_ctx.stage_dir("baseline") / "weights" / "best.safetensors", val.records,
                            val.class_names)
    rows: dict[str, dict[str, Any]] = {}
    out = run_dir / "ablate"
    for name in names:
        if name == "full":
            ctx = base_ctx
        else:
            cfg = variant_config(config, ABLATIONS[name])
            ctx = RunContext(cfg, out / name, override)
            linked = link_unchanged_stages(base_ctx, ctx)
            log.info("ablation %s: reusing %s from the base run", name, linked)
            run_pipeline(cfg, ctx.run_dir, stages=TRAINING_STAGES, data_override=override)
        rows[name] = evaluate_run(ctx)
        log.info("ablation %s: %s", name, rows[name])
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps({"baseline": {"map50": b.map50, "map50_95": b.map50_95},
                                                   "variants": rows}, indent=1))
    lines = [f"# Ablations: {config.name}", "",
             f"Validation split, {len(val)} images, torch evaluation. Baseline (student architecture alone): "
             f"mAP50 {b.map50:.4f}, mAP50:95 {b.map50_95:.4f}.", "",
             "| variant | teacher mAP50 | teacher mAP50:95 | student mAP50 | student mAP50:95 | student vs baseline "
             "(mAP50:95) |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['teacher_map50']:.4f} | {r['teacher_map50_95']:.4f} | {r['student_map50']:.4f} | "
                     f"{r['student_map50_95']:.4f} | {r['student_map50_95'] - b.map50_95:+.4f} |")
    path = out / "ablation.md"
    path.write_text("\n".join(lines) + "\n")
    return path

"""``python -m training ablate``: the ablation grid of the method, one table.

Variants (each a config override of the base config):

    full              the method as configured
    no_fft_filter     teacher without the FFT noise filter
    no_resvae         teacher reads the raw DDPM features (no ResVAE compression)
    no_gate           attended signal added back with weight 1 (no dynamic gate)
    feature_kd_only   distillation without the response term
    response_kd_only  distillation without the feature term
    self_distill      the control: the same distillation with a plain detector as teacher (no DDPM features):
                      the continued baseline, so its teacher has trained exactly as long as the DDPM teacher
    continued_baseline  the control: the trained baseline given the teacher's extra epochs at the teacher's
                      learning rate (stage ``continued``: no DDPM features, no distillation)

Each variant runs in ``RUN/ablate/<variant>``; stages whose config is unchanged (data, DDPM, features, and
wherever possible ResVAE, teacher, baseline) are linked from the base run instead of being recomputed. The
teacher and the student are evaluated with torch on the validation split (the same decoding as the SDK).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from training.config import ExperimentConfig, config_from_dict
from training.pipeline.runner import link_unchanged_stages

log = logging.getLogger(__name__)

ABLATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {},
    "no_fft_filter": {"teacher": {"fft_filter": False}},
    "no_resvae": {"resvae": {"enabled": False}},
    "no_gate": {"teacher": {"gate": False}},
    "feature_kd_only": {"distill": {"response_weight": 0.0}},
    "response_kd_only": {"distill": {"feature_weight": 0.0}},
    "self_distill": {"distill": {"teacher": "continued"}},
    "continued_baseline": {},  # the base config; its own stage, ``continued``, is the control
}
# the stages each variant needs (the default: TRAINING_STAGES)
VARIANT_STAGES = {"continued_baseline": ["data", "baseline", "continued"],
                  "self_distill": ["data", "baseline", "continued", "distill"]}
TRAINING_STAGES = ["data", "ddpm", "features", "resvae", "teacher", "baseline", "distill"]


def variant_config(base: ExperimentConfig, overrides: dict[str, dict[str, Any]]) -> ExperimentConfig:
    values = copy.deepcopy(base.to_dict())
    for section, changes in overrides.items():
        values[section].update(changes)
    return config_from_dict(json.loads(json.dumps(values)), where=f"ablation {overrides}")


def checkpoint_predictions(path: Path, records: list) -> list:
    """A plain detector checkpoint's predictions on ``records`` (torch, decoded as the SDK does)."""
    from training.detector.checkpoint import load_detector
    from training.evaluation.torch_predict import predict_records

    model, meta = load_detector(path)
    return predict_records(model, records, int(meta["input_size"]))


def score_predictions(records: list, class_names: list[str], preds: list, contrasts: dict | None) -> dict[str, Any]:
    """mAP and per-class AP50:95 of ``preds`` on ``records``, and AP50 per contrast bin when the contrasts are
    known."""
    from training.evaluation.metrics import contrast_bin_metrics, evaluate_detections

    m = evaluate_detections(records, class_names, preds)
    out: dict[str, Any] = {"map50": m.map50, "map50_95": m.map50_95, "per_class_ap50_95": m.per_class_ap50_95}
    if contrasts is not None:
        bins = contrast_bin_metrics(records, class_names, preds, contrasts)
        out["ap50_by_contrast"] = {k: (v.map50 if v is not None else None) for k, v in bins.items()}
    return out


def evaluate_run(ctx, name: str = "full", contrasts: dict | None = None) -> dict[str, Any]:
    """Teacher and student (for continued_baseline: the continued baseline) on the validation split (torch)."""
    from training.evaluation.report import teacher_predictions
    from training.pipeline import load_split

    _, val = load_split(ctx)

    def checkpoint(stage: str) -> dict[str, Any]:
        preds = checkpoint_predictions(ctx.stage_dir(stage) / "weights" / "best.safetensors", val.records)
        return score_predictions(val.records, val.class_names, preds, contrasts)

    if name == "continued_baseline":
        return {"teacher": None, "student": checkpoint("continued")}
    teacher = None
    if ctx.config.distill.teacher == "ddpm":
        teacher = score_predictions(val.records, val.class_names, teacher_predictions(ctx, val.records)[0], contrasts)
    return {"teacher": teacher, "student": checkpoint("distill")}


def run_ablations(config: ExperimentConfig, run_dir: str | Path, variants: list[str] | None = None,
                  data_override: str | Path | None = None) -> Path:
    """Run the grid; write ``RUN/ablate/ablation.md`` and ``ablation.json``; return the markdown path."""
    from training.data.synthetic import read_contrasts
    from training.pipeline import RunContext, dataset_path, load_split, run_pipeline

    names = variants or list(ABLATIONS)
    unknown = set(names) - set(ABLATIONS)
    if unknown:
        raise ValueError(f"unknown ablation(s) {sorted(unknown)}; known: {list(ABLATIONS)}")
    run_dir = Path(run_dir)
    override = Path(data_override) if data_override else None
    base_ctx = RunContext(config, run_dir, override)
    run_pipeline(config, run_dir, stages=TRAINING_STAGES, data_override=override)
    _, val = load_split(base_ctx)
    contrasts = read_contrasts(dataset_path(base_ctx))
    baseline = score_predictions(val.records, val.class_names,
                       checkpoint_predictions(base_ctx.stage_dir("baseline") / "weights" / "best.safetensors",
                                               val.records), contrasts)
    rows: dict[str, dict[str, Any]] = {}
    out = run_dir / "ablate"
    done: dict[str, Any] = {}
    for name in names:
        if name == "full":
            ctx = base_ctx
        else:
            cfg = variant_config(config, ABLATIONS[name])
            ctx = RunContext(cfg, out / name, override)
            for source in [base_ctx, *done.values()]:  # the controls share the continued baseline
                linked = link_unchanged_stages(source, ctx)
            log.info("ablation %s: reusing %s from the base run", name, linked)
            run_pipeline(cfg, ctx.run_dir, stages=VARIANT_STAGES.get(name, TRAINING_STAGES), data_override=override)
        done[name] = ctx
        rows[name] = evaluate_run(ctx, name, contrasts)
        log.info("ablation %s: %s", name, rows[name])
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps({"baseline": baseline, "variants": rows}, indent=1,
                                                  default=lambda v: None))
    path = out / "ablation.md"
    path.write_text(render_ablations(config.name, len(val), baseline, rows))
    return path


def render_ablations(name: str, num_val: int, baseline: dict[str, Any], rows: dict[str, dict[str, Any]]) -> str:
    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    lines = [f"# Ablations: {name}", "",
             f"Validation split, {num_val} images, torch evaluation. Baseline (student architecture alone): "
             f"mAP50 {f(baseline['map50'])}, mAP50:95 {f(baseline['map50_95'])}. `self_distill` distils from the "
             "continued baseline (no DDPM features, as many epochs as the teacher); `continued_baseline` is the trained baseline given the "
             "teacher's extra epochs at its learning rate, no DDPM features (its row's student is that model).", "",
             "| variant | teacher mAP50 | teacher mAP50:95 | student mAP50 | student mAP50:95 | student vs baseline "
             "(mAP50:95) |", "|---|---:|---:|---:|---:|---:|"]
    for variant, r in rows.items():
        t, s = r["teacher"] or {}, r["student"]
        lines.append(f"| {variant} | {f(t.get('map50'))} | {f(t.get('map50_95'))} | {f(s['map50'])} | "
                     f"{f(s['map50_95'])} | {s['map50_95'] - baseline['map50_95']:+.4f} |")
    if "ap50_by_contrast" in baseline:
        bins = list(baseline["ap50_by_contrast"])
        lines += ["", "## AP50 by defect contrast (synthetic data)", "",
                  "| model | " + " | ".join(bins) + " |", "|---|" + "---:|" * len(bins),
                  "| baseline | " + " | ".join(f(baseline["ap50_by_contrast"][b]) for b in bins) + " |"]
        for variant, r in rows.items():
            for role in ("teacher", "student"):
                if r[role] is not None and "ap50_by_contrast" in r[role]:
                    lines.append(f"| {variant} {role} | " + " | ".join(f(r[role]["ap50_by_contrast"][b])
                                                                     for b in bins) + " |")
    return "\n".join(lines) + "\n"

"""``python -m training compare``: the baseline, the DDPM teacher, its student and the controls over several seeds.

Layout under OUT (default ``runs/<config name>/compare``):

    OUT/shared/                 data, DDPM, features, ResVAE: seeded by the config's ``seed``, trained once
    OUT/seed-<s>/full/          baseline, teacher, student with ``train.seed = s`` (shared stages linked)
    OUT/seed-<s>/<variant>/     each further variant (``self_distill``, ``continued_baseline``, any ablation)
    OUT/compare.md, compare.json, compare.png

The seed varies what the claim is about (the detector stages' initialisation, sampling and augmentation) on
one split and one DDPM, so the spread is the detector's, and the DDPM is paid for once. Every stage resumes or
skips as in ``run``; each model's scores are kept beside it with the key of the stage that made it, so a rerun
evaluates only what changed.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import ExperimentConfig
from training.evaluation.ablation import (
    ABLATIONS,
    TRAINING_STAGES,
    VARIANT_STAGES,
    checkpoint_predictions,
    score_predictions,
    variant_config,
)
from training.pipeline.runner import link_unchanged_stages

log = logging.getLogger(__name__)

DEFAULT_VARIANTS = ["full", "self_distill", "continued_baseline"]
SHARED_STAGES = ["data", "ddpm", "features", "resvae"]
# (paired difference, target in mAP50:95 points) the method claims; reported, never asserted
CLAIMS = [("student", "self_distill", 2.0), ("student", "baseline", 3.0), ("teacher", "continued_baseline", 3.0)]


@dataclass(frozen=True)
class ModelRow:
    """One row of the table: the model ``stage`` of ``variant`` trained."""

    name: str
    variant: str
    stage: str  # baseline | continued | teacher | distill


def rows_of(variant: str, config: ExperimentConfig) -> list[ModelRow]:
    if variant == "full":
        return [ModelRow("baseline", "full", "baseline"), ModelRow("teacher", "full", "teacher"),
                ModelRow("student", "full", "distill")]
    if variant == "continued_baseline":
        return [ModelRow("continued_baseline", variant, "continued")]
    if variant == "self_distill":
        return [ModelRow("self_distill", variant, "distill")]
    cfg = variant_config(config, ABLATIONS[variant])
    rows = [ModelRow(f"{variant} teacher", variant, "teacher")] if cfg.distill.teacher == "ddpm" else []
    return rows + [ModelRow(f"{variant} student", variant, "distill")]


def _score(ctx, row: ModelRow, val, contrasts: dict | None) -> dict[str, Any]:
    """The row's scores on the validation split, reused while the stage that made the model is unchanged."""
    from training.evaluation.report import teacher_predictions
    from training.pipeline.runner import completed_key
    from training.pipeline.stages import STAGES_BY_NAME

    key = completed_key(ctx, STAGES_BY_NAME[row.stage])
    cache = ctx.run_dir / f"scores-{row.stage}.json"
    if key is not None and cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return cached["scores"]
    if row.stage == "teacher":
        preds = teacher_predictions(ctx, val.records)[0]
    else:
        preds = checkpoint_predictions(ctx.stage_dir(row.stage) / "weights" / "best.safetensors", val.records)
    scores = score_predictions(val.records, val.class_names, preds, contrasts)
    cache.write_text(json.dumps({"key": key, "scores": scores}, indent=1))
    return scores


def _stage_timing(ctx, stage: str) -> dict[str, float] | None:
    marker = ctx.stage_dir(stage) / "stage.json"
    if not marker.is_file():
        return None
    info = json.loads(marker.read_text())
    out = {"seconds": float(info["seconds"])}
    result = info.get("result", {})
    for key in ("seconds_per_epoch", "seconds_per_validation"):
        if result.get(key) is not None:
            out[key] = float(result[key])
    return out


def run_compare(config: ExperimentConfig, seeds: list[int], out: str | Path, variants: list[str] | None = None,
                data_override: str | Path | None = None, command: str | None = None) -> Path:
    """Train every variant for every seed (resuming what is done), write OUT/compare.md; return its path."""
    from training.data.synthetic import read_contrasts
    from training.pipeline import RunContext, dataset_path, load_split, run_pipeline

    variants = list(dict.fromkeys(variants or DEFAULT_VARIANTS))
    unknown = set(variants) - set(ABLATIONS)
    if unknown:
        raise ValueError(f"--variants: unknown {sorted(unknown)}; known: {list(ABLATIONS)}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: give distinct seeds, got {seeds}")
    out = Path(out)
    override = Path(data_override) if data_override else None
    needs_ddpm = any("ddpm" in VARIANT_STAGES.get(v, TRAINING_STAGES) for v in variants)
    shared = RunContext(config, out / "shared", override)
    run_pipeline(config, shared.run_dir, stages=SHARED_STAGES if needs_ddpm else ["data"], data_override=override)
    _, val = load_split(shared)
    contrasts = read_contrasts(dataset_path(shared))

    rows = [ModelRow("baseline", "full", "baseline")]
    for variant in variants:
        rows += [r for r in rows_of(variant, config) if r not in rows]
    scores: dict[int, dict[str, dict[str, Any]]] = {}
    timing: dict[str, list[dict[str, float]]] = {}
    for seed in seeds:
        cfg = variant_config(config, {"train": {"seed": seed}})
        full = RunContext(cfg, out / f"seed-{seed}" / "full", override)
        link_unchanged_stages(shared, full)
        run_pipeline(cfg, full.run_dir, stages=TRAINING_STAGES if "full" in variants else ["data", "baseline"],
                     data_override=override)
        contexts = {"full": full}
        for variant in variants:
            if variant == "full":
                continue
            vcfg = variant_config(cfg, ABLATIONS[variant])
            ctx = RunContext(vcfg, out / f"seed-{seed}" / variant, override)
            for source in [*contexts.values(), shared]:  # the controls share the continued baseline
                link_unchanged_stages(source, ctx)
            log.info("compare seed %d: %s", seed, variant)
            run_pipeline(vcfg, ctx.run_dir, stages=VARIANT_STAGES.get(variant, TRAINING_STAGES), data_override=override)
            contexts[variant] = ctx
        scores[seed] = {r.name: _score(contexts[r.variant], r, val, contrasts) for r in rows}
        for r in rows:
            t = _stage_timing(contexts[r.variant], r.stage)
            if t is not None:
                timing.setdefault(r.name, []).append(t)
    for stage in SHARED_STAGES[1:] if needs_ddpm else []:
        t = _stage_timing(shared, stage)
        if t is not None:
            timing[stage] = [t]

    summary = summarise(scores, [r.name for r in rows], list(val.class_names))
    meta = {"config": config.name, "seeds": seeds, "variants": variants, "num_val": len(val),
            "date": datetime.date.today().isoformat(), "machine": machine_description(),
            "command": command or ""}
    (out / "compare.json").write_text(json.dumps({"meta": meta, "scores": scores, "summary": summary,
                                                  "timing": timing}, indent=1, default=lambda v: None))
    plot = out / "compare.png"
    plot_summary(summary, scores, plot)
    path = out / "compare.md"
    path.write_text(render_compare(meta, summary, timing, plot.name))
    return path


def mean_std(values: list[float]) -> tuple[float, float] | None:
    """Mean and sample standard deviation (0 for one value) of the values that are numbers (a class absent from
    the validation split has a NaN AP); None when none is."""
    values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(scores: dict[int, dict[str, dict[str, Any]]], rows: list[str], class_names: list[str]
              ) -> dict[str, Any]:
    """Per row: mean and std of mAP50, mAP50:95, each class's AP50:95 and each contrast bin's AP50; and the
    claims' paired (same seed) differences in mAP50:95 points."""
    seeds = list(scores)
    out: dict[str, Any] = {"rows": {}, "claims": []}
    for name in rows:
        per_seed = [scores[s][name] for s in seeds]
        row: dict[str, Any] = {"per_seed": {str(s): [scores[s][name]["map50"], scores[s][name]["map50_95"]]
                                            for s in seeds}}
        for metric in ("map50", "map50_95"):
            row[metric] = mean_std([p[metric] for p in per_seed])
        row["per_class_ap50_95"] = {c: mean_std([p["per_class_ap50_95"].get(c) for p in per_seed])
                                    for c in class_names}
        if "ap50_by_contrast" in per_seed[0]:
            row["ap50_by_contrast"] = {}
            for b in per_seed[0]["ap50_by_contrast"]:
                row["ap50_by_contrast"][b] = mean_std([p["ap50_by_contrast"].get(b) for p in per_seed])
        out["rows"][name] = row
    for a, b, target in CLAIMS:
        if a in out["rows"] and b in out["rows"]:
            diffs = [100 * (scores[s][a]["map50_95"] - scores[s][b]["map50_95"]) for s in seeds]
            m, sd = mean_std(diffs)
            out["claims"].append({"model": a, "control": b, "target_points": target, "mean_points": m,
                                  "std_points": sd, "per_seed": diffs, "met": m >= target})
    return out


def machine_description() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, {platform.system()} Python {platform.python_version()}"


def plot_summary(summary: dict[str, Any], scores: dict[int, dict[str, dict[str, Any]]], path: Path) -> None:
    """Bars: mean mAP50:95 and mAP50 per model with the standard deviation; dots: the seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["rows"])
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.6 * len(names)), 3.6))
    for ax, metric, title in zip(axes, ("map50_95", "map50"), ("mAP50:95", "mAP50")):
        means = [summary["rows"][n][metric][0] for n in names]
        stds = [summary["rows"][n][metric][1] for n in names]
        xs = range(len(names))
        ax.bar(xs, means, yerr=stds, capsize=4, color="#7aa6c2", edgecolor="#2f4f64")
        for x, n in zip(xs, names):
            ax.scatter([x] * len(scores), [scores[s][n][metric] for s in scores], color="#1b2a36", s=10, zorder=3)
        ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{title}, mean ± std over {len(scores)} seed(s)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_compare(meta: dict[str, Any], summary: dict[str, Any], timing: dict[str, list[dict[str, float]]],
                   plot_name: str) -> str:
    def ms(v: tuple[float, float] | None, scale: float = 1.0) -> str:
        return "n/a" if v is None else f"{v[0] * scale:.4f} ± {v[1] * scale:.4f}"

    rows = summary["rows"]
    n = len(meta["seeds"])
    lines = [f"# Compare: {meta['config']}", "",
             f"{meta['date']}, {meta['machine']}. Seeds {meta['seeds']} (``train.seed``: the detector stages' "
             f"initialisation, sampling and augmentation; one split and one DDPM for all), validation split of "
             f"{meta['num_val']} images, torch evaluation (pycocotools), mean ± sample std over {n} seed(s).", ""]
    if meta.get("command"):
        lines += ["```", meta["command"], "```", ""]
    lines += ["| model | mAP50 | mAP50:95 | mAP50:95 per seed |", "|---|---:|---:|---|"]
    for name, r in rows.items():
        per = ", ".join(f"{v[1]:.4f}" for v in r["per_seed"].values())
        lines.append(f"| {name} | {ms(r['map50'])} | {ms(r['map50_95'])} | {per} |")
    if summary["claims"]:
        lines += ["", "## The claims (paired by seed, mAP50:95 points)", "",
                  "| model | control | difference | target | met |", "|---|---|---:|---:|---|"]
        for c in summary["claims"]:
            lines.append(f"| {c['model']} | {c['control']} | {c['mean_points']:+.2f} ± {c['std_points']:.2f} | "
                         f"+{c['target_points']:.0f} | {'yes' if c['met'] else 'no'} |")
    classes = list(next(iter(rows.values()))["per_class_ap50_95"])
    lines += ["", "## AP50:95 per class", "", "| class | " + " | ".join(rows) + " |", "|---|" + "---:|" * len(rows)]
    for c in classes:
        lines.append(f"| {c} | " + " | ".join(ms(r["per_class_ap50_95"][c]) for r in rows.values()) + " |")
    if all("ap50_by_contrast" in r for r in rows.values()):
        bins = list(next(iter(rows.values()))["ap50_by_contrast"])
        lines += ["", "## AP50 by defect contrast", "", "| model | " + " | ".join(bins) + " |",
                  "|---|" + "---:|" * len(bins)]
        for name, r in rows.items():
            lines.append(f"| {name} | " + " | ".join(ms(r["ap50_by_contrast"][b]) for b in bins) + " |")
    if timing:
        lines += ["", "## Training cost", "", "| stage | seconds per epoch | validation pass (s) | stage total (s) |",
                  "|---|---:|---:|---:|"]
        for name, ts in timing.items():
            cells = []
            for key in ("seconds_per_epoch", "seconds_per_validation", "seconds"):
                vals = [t[key] for t in ts if key in t]
                cells.append(f"{statistics.fmean(vals):.1f}" if vals else "n/a")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"![mAP per model]({plot_name})", ""]
    return "\n".join(lines)

"""Distillation losses, the distilled student's checkpoint, and the ablation grid's plumbing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training.config import load_config
from training.detector import DetectorOutput
from training.detector.checkpoint import load_detector
from training.distill.losses import feature_distillation, foreground_weights, response_distillation
from training.evaluation.ablation import ABLATIONS, variant_config
from training.pipeline import RunContext
from training.pipeline.runner import link_unchanged_stages


def test_foreground_weights_mark_cells_inside_boxes():
    boxes = torch.tensor([[[0.0, 0.0, 16.0, 16.0], [40.0, 40.0, 48.0, 48.0]]])
    valid = torch.tensor([[True, False]])  # the second box is padding
    w = foreground_weights(boxes, valid, size=64, stride=8, fg=4.0)
    assert w.shape == (1, 1, 8, 8)
    assert torch.equal(w[0, 0, :2, :2], torch.full((2, 2), 4.0))
    assert float(w.sum()) == 4 * 4.0 + 60 * 1.0  # padding boxes do not count


def test_feature_distillation_is_zero_only_for_matching_features():
    torch.manual_seed(0)
    t = [torch.randn(2, 8, 4, 4), torch.randn(2, 16, 2, 2)]
    w = [torch.ones(2, 1, 4, 4), torch.ones(2, 1, 2, 2)]
    assert float(feature_distillation(t, t, w)) < 1e-6
    # normalised: a scaled and shifted copy of the teacher's map is a perfect student
    assert float(feature_distillation([3 * x + 1 for x in t], t, w)) < 1e-6
    s = [x.clone().requires_grad_(True) for x in [torch.randn(2, 8, 4, 4), torch.randn(2, 16, 2, 2)]]
    loss = feature_distillation(s, t, w)
    loss.backward()
    assert float(loss) > 0.5 and all(x.grad is not None and x.grad.abs().sum() > 0 for x in s)
    # foreground weighting moves the loss towards the weighted cells
    wf = [torch.ones(2, 1, 4, 4), torch.ones(2, 1, 2, 2)]
    wf[0][..., 0, 0] = 100.0
    assert float(feature_distillation(s, t, wf)) != pytest.approx(float(loss))


def _output(seed: int, anchors: int = 84, classes: int = 3, reg_max: int = 16) -> DetectorOutput:
    g = torch.Generator().manual_seed(seed)
    return DetectorOutput([], torch.randn(2, anchors, classes, generator=g) * 3,
                          torch.randn(2, anchors, 4 * reg_max, generator=g), None)


def test_response_distillation_vanishes_when_student_equals_teacher():
    teacher, student = _output(0), _output(1)
    cls, box = response_distillation(teacher, teacher, reg_max=16, temperature=2.0)
    assert float(box) < 1e-6
    # BCE against itself is the entropy of the teacher's tempered probabilities: any other student costs more
    cls2, box2 = response_distillation(student, teacher, reg_max=16, temperature=2.0)
    assert float(cls2) > float(cls) and float(box2) > 0.01
    # reg_max == 1 (direct distances): squared error
    t1, s1 = _output(0, reg_max=1), _output(1, reg_max=1)
    assert float(response_distillation(t1, t1, 1, 2.0)[1]) == 0 and float(response_distillation(s1, t1, 1, 2.0)[1]) > 0


def test_distilled_student_is_a_plain_detector(tiny_pipeline_run):
    run, res = tiny_pipeline_run
    student, meta = load_detector(run / "distill" / "weights" / "best.safetensors")
    baseline, _ = load_detector(run / "baseline" / "weights" / "best.safetensors")
    assert meta["distilled_from"] == "teacher"
    assert sum(p.numel() for p in student.parameters()) == sum(p.numel() for p in baseline.parameters())
    rows = (run / "distill" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    first = dict(zip(header, rows[1].split(",")))
    assert float(first["kd_feat"]) > 0 and float(first["kd_resp"]) > 0
    assert res["distill"]["parameters"] == res["baseline"]["parameters"]


def test_ablation_variants_reuse_unchanged_stages(tiny_pipeline_run, tiny_pipeline_config: Path, tmp_path: Path):
    run, _ = tiny_pipeline_run
    base = load_config(tiny_pipeline_config)
    base_ctx = RunContext(base, run)
    no_gate = variant_config(base, ABLATIONS["no_gate"])
    assert no_gate.teacher.gate is False and base.teacher.gate is True
    linked = link_unchanged_stages(base_ctx, RunContext(no_gate, tmp_path / "no_gate"))
    assert linked == ["data", "ddpm", "features", "resvae", "baseline"]  # teacher and distill are retrained
    kd_only = variant_config(base, ABLATIONS["feature_kd_only"])
    linked = link_unchanged_stages(base_ctx, RunContext(kd_only, tmp_path / "kd"))
    assert linked == ["data", "ddpm", "features", "resvae", "baseline", "teacher"]
    no_vae = variant_config(base, ABLATIONS["no_resvae"])
    assert link_unchanged_stages(base_ctx, RunContext(no_vae, tmp_path / "vae")) == ["data", "ddpm", "features",
                                                                                      "baseline"]
    assert json.loads((tmp_path / "kd" / "teacher" / "stage.json").read_text())["result"]


def test_ablate_command_rejects_unknown_variants(tiny_pipeline_config: Path, tmp_path: Path, capsys):
    from training.cli import main

    assert main(["ablate", "--config", str(tiny_pipeline_config), "--out", str(tmp_path), "--variants",
                 "no_fft,full"]) == 2
    assert "unknown ablation(s) ['no_fft']" in capsys.readouterr().err


def test_the_controls_isolate_the_ddpm_features(tiny_pipeline_run, tiny_pipeline_config: Path, tmp_path: Path):
    """continued_baseline: the baseline given the teacher's extra epochs; self_distill: the same distillation
    with that continued baseline as teacher (no DDPM features), sharing the one continued baseline."""
    from training.detector.continued import ContinuedBaselineTrainer
    from training.evaluation.ablation import VARIANT_STAGES
    from training.pipeline import load_split, run_pipeline

    run, _ = tiny_pipeline_run
    base = load_config(tiny_pipeline_config)
    base_ctx = RunContext(base, run)
    assert VARIANT_STAGES["continued_baseline"] == ["data", "baseline", "continued"]
    control = RunContext(variant_config(base, ABLATIONS["continued_baseline"]), tmp_path / "continued")
    assert "baseline" in link_unchanged_stages(base_ctx, control)  # it continues the very baseline trained
    assert not (run / "continued").exists()  # an optional stage: a plain run never trains it
    res = run_pipeline(control.config, control.run_dir, stages=VARIANT_STAGES["continued_baseline"])
    assert res["baseline"]["skipped"] and not res["continued"].get("skipped")
    summary = json.loads((control.stage_dir("continued") / "summary.json").read_text())
    assert summary["epochs"] == (base.teacher.epochs or base.train.epochs)  # the teacher's schedule
    baseline, _ = load_detector(base_ctx.stage_dir("baseline") / "weights" / "best.safetensors")
    continued, meta = load_detector(control.stage_dir("continued") / "weights" / "best.safetensors")
    assert continued.spec == baseline.spec
    # it starts from the trained baseline's weights, not from scratch
    train, val = load_split(control)
    weights = base_ctx.stage_dir("baseline") / "weights" / "best.safetensors"
    start = ContinuedBaselineTrainer(control.config, train, val, tmp_path / "unused", weights).build_model()
    assert all(torch.equal(v, baseline.state_dict()[k]) for k, v in start.state_dict().items())
    warm = variant_config(base, {"train": {"warmup_bias_lr": 0.1}})
    assert ContinuedBaselineTrainer(warm, train, val, tmp_path / "unused", weights).warmup_bias_lr is None
    other = variant_config(base, {"model": {"depthwise": not base.model.depthwise}})
    with pytest.raises(ValueError, match="best.safetensors: detector .* differs"):
        ContinuedBaselineTrainer(other, train, val, tmp_path / "unused", weights).build_model()

    self_distill = variant_config(base, ABLATIONS["self_distill"])
    assert self_distill.distill.teacher == "continued" and base.distill.teacher == "ddpm"
    ctx = RunContext(self_distill, tmp_path / "self_distill")
    link_unchanged_stages(base_ctx, ctx)
    linked = link_unchanged_stages(control, ctx)
    assert "continued" in linked and "distill" not in linked  # the one continued baseline, trained once
    res = run_pipeline(self_distill, ctx.run_dir, stages=VARIANT_STAGES["self_distill"])
    assert res["continued"]["skipped"] and not res["distill"].get("skipped")
    student, meta = load_detector(ctx.stage_dir("distill") / "weights" / "best.safetensors")
    assert meta["distilled_from"] == "continued" and student.spec.num_classes == 6
    # a changed continued baseline is a changed teacher: the distillation reruns
    from training.pipeline.runner import completed_key, stage_key
    from training.pipeline.stages import STAGES_BY_NAME

    distill = STAGES_BY_NAME["distill"]
    assert completed_key(ctx, distill) == stage_key(ctx, distill)
    (control.stage_dir("continued") / "weights" / "best.safetensors").touch()
    assert completed_key(ctx, distill) != stage_key(ctx, distill)


def test_ap_by_contrast_bin_counts_only_that_bins_boxes():
    import numpy as np

    from training.data import Record
    from training.evaluation import Prediction
    from training.evaluation.metrics import contrast_bin_metrics

    rec = Record("im", Path("im.png"), 100, 100, np.array([[10, 10, 30, 30], [60, 60, 90, 90]], np.float32),
                 np.array([0, 0]))
    found_faint_only = [Prediction(image_index=0, class_id=0, box=(10.0, 10.0, 30.0, 30.0), score=0.9)]
    bins = contrast_bin_metrics([rec], ["scratch"], found_faint_only, {"im": [0.2, 0.9]})
    assert bins["faint"].map50 == pytest.approx(1.0) and bins["strong"].map50 == 0.0 and bins["medium"] is None


def test_ablation_table_has_the_controls_and_contrast_bins():
    from training.evaluation.ablation import render_ablations

    by_bin = {"faint": 0.1, "medium": 0.3, "strong": None}
    base = {"map50": 0.2, "map50_95": 0.1, "ap50_by_contrast": by_bin}
    rows = {"full": {"teacher": {"map50": 0.3, "map50_95": 0.15, "ap50_by_contrast": by_bin},
                     "student": {"map50": 0.25, "map50_95": 0.12, "ap50_by_contrast": by_bin}},
            "continued_baseline": {"teacher": None, "student": {"map50": 0.21, "map50_95": 0.11}}}
    text = render_ablations("t", 8, base, rows)
    assert "| full | 0.3000 | 0.1500 | 0.2500 | 0.1200 | +0.0200 |" in text
    assert "| continued_baseline | n/a | n/a | 0.2100 | 0.1100 | +0.0100 |" in text
    assert "| faint | medium | strong |" in text and "| full student | 0.1000 | 0.3000 | n/a |" in text

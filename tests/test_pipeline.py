"""The main job's data stage, its resumability, and config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.config import ConfigError, config_from_dict, load_config
from training.pipeline import RunContext, load_split, run_pipeline

REPO = Path(__file__).resolve().parents[1]


def _tiny():
    return config_from_dict({"name": "t", "data": {"synthetic": {"num_images": 20}}})


def test_data_stage_splits_and_is_skipped_on_rerun(tmp_path: Path):
    res = run_pipeline(_tiny(), tmp_path / "run", stages=["data"])
    assert set(res) == {"data"}
    assert res["data"]["num_train"] + res["data"]["num_val"] == 20
    split = json.loads((tmp_path / "run" / "data" / "split.json").read_text())
    assert not set(split["train"]) & set(split["val"])
    again = run_pipeline(_tiny(), tmp_path / "run", stages=["data"])
    assert again["data"]["skipped"]
    changed = config_from_dict({"name": "t", "data": {"synthetic": {"num_images": 25}}})
    assert not run_pipeline(changed, tmp_path / "run", stages=["data"])["data"].get("skipped")
    train, val = load_split(RunContext(changed, tmp_path / "run"))
    assert len(train) + len(val) == 25


def test_shipped_configs_parse():
    for path in (REPO / "configs").glob("*.yaml"):
        load_config(path)


def test_config_errors_name_key_and_file(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"config\.data: unknown key\(s\) \['sourse'\]"):
        config_from_dict({"data": {"sourse": "x"}})
    with pytest.raises(ConfigError, match="train.optimizer must be 'adamw' or 'sgd'"):
        config_from_dict({"train": {"optimizer": "adam"}})
    with pytest.raises(ConfigError, match="input_size must be a multiple of 32"):
        config_from_dict({"model": {"input_size": 100}})
    with pytest.raises(ConfigError, match="seed: expected int"):
        config_from_dict({"seed": "zero"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml: broken YAML"):
        load_config(bad)
    with pytest.raises(ValueError, match="unknown stage"):
        run_pipeline(_tiny(), tmp_path / "r", stages=["nope"])


def test_set_overrides_config_values_and_names_bad_ones():
    path = REPO / "configs" / "neu-det.yaml"
    base = load_config(path)
    config = load_config(path, ["train.epochs=3", "ddpm.epochs=2", "teacher.levels=[0]", "model.seg_head=\"off\""])
    assert (config.train.epochs, config.ddpm.epochs, config.teacher.levels) == (3, 2, [0])
    assert config.model.seg_head == "off" and config.train.lr == base.train.lr  # the rest is the file's
    with pytest.raises(ConfigError, match=r"neu-det.yaml.train: unknown key.*\(with --set train.epoch=3\)"):
        load_config(path, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="train.epochs: expected int"):
        load_config(path, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["train.epochs"])
    with pytest.raises(ConfigError, match="train.epochs is not a section"):
        load_config(path, ["train.epochs.x=1"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path, ["train.lr=[1"])
    nested = load_config(path, ["train.assigner.alpha=0.5", "train.loss_weights.cls=1"])
    assert (nested.train.assigner.alpha, nested.train.loss_weights.cls, nested.train.loss_weights.box) == (0.5, 1, 7.5)
    with pytest.raises(ConfigError, match="train.assigner: assigner.topk must be >= 1"):
        load_config(path, ["train.assigner.topk=0"])
    with pytest.raises(ConfigError, match="train.loss_weights: loss_weights.dfl must be >= 0"):
        load_config(path, ["train.loss_weights.dfl=-1"])


def test_run_command_takes_set_and_reports_a_bad_key(tmp_path: Path, capsys):
    from training.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text("name: tiny\ndata: {source: synthetic, synthetic: {num_images: 12, size: 64}}\n")
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run"), "--stages", "data",
                 "--set", "data.synthetic.num_images=9"]) == 0
    assert "num_images: 9" in (tmp_path / "run" / "config.yaml").read_text()  # the run records the override
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run"), "--set", "data.sourse=x"]) == 2
    err = capsys.readouterr().err
    assert "tiny.yaml.data: unknown key(s) ['sourse']" in err and err.rstrip().endswith("(with --set data.sourse=x)")


def test_main_job_runs_every_stage_and_skips_them_on_rerun(tiny_pipeline_run, tiny_pipeline_config: Path):
    """data -> ddpm -> features -> resvae -> baseline -> teacher -> distill -> export -> report -> demo."""
    import sqlite3

    run, res = tiny_pipeline_run
    assert list(res) == ["data", "ddpm", "features", "resvae", "baseline", "teacher", "distill", "export", "report",
                         "demo"]
    assert res["export"]["models"] == ["onnx/fp32", "openvino/fp32", "openvino/int8"]
    summary = json.loads((run / "report" / "summary.json").read_text())
    rows = {"baseline", "teacher", "student", "student INT8"}
    assert rows <= set(summary["models"]) <= rows | {"student bf16"}  # bf16 where the CPU has it
    assert set(summary["calibration"]["per_class"]) == set(json.loads((run / "data" / "split.json").read_text())
                                                           ["class_names"])
    report = (run / "report" / "report.md").read_text()
    for needle in ("| baseline |", "| teacher |", "| student |", "| student INT8 |", "## Per-class AP50",
                   "pr_models.png", "latency.png", "## Stage wall time", "## OK / NG at calibrated thresholds"):
        assert needle in report
    assert (run / "report" / "pr_models.png").is_file() and (run / "report" / "latency.png").is_file()
    meta = json.loads((run / "package" / "metadata.json").read_text())
    assert meta["provenance"]["run_dir"].endswith("distill")  # the package ships the distilled student
    demo = json.loads((run / "demo" / "summary.json").read_text())
    assert demo["frames"] == res["data"]["num_val"] and demo["stopped_by"] == "end of source"
    lines = (run / "demo" / "results.jsonl").read_text().splitlines()
    assert len(lines) == demo["frames"]
    with sqlite3.connect(run / "demo" / "inspections.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM inspections").fetchone()[0] == demo["frames_with_defects"]
    again = run_pipeline(load_config(tiny_pipeline_config), run)
    assert all(stage.get("skipped") for stage in again.values())


def test_force_reruns_a_training_stage_from_scratch(tiny_pipeline_run, tiny_pipeline_config: Path, tmp_path: Path,
                                                      caplog):
    """--force on a finished training stage trains again from epoch 1 (resuming its last epoch would do nothing)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_pipeline_run[0], run)
    stale = run / "baseline" / "left_over.txt"
    stale.write_text("from the old run")
    metrics_before = (run / "baseline" / "metrics.csv").read_text()
    with caplog.at_level("INFO"):
        res = run_pipeline(load_config(tiny_pipeline_config), run, stages=["baseline"], force=True)
    assert not res["baseline"].get("skipped") and not stale.exists()
    assert "resuming" not in caplog.text and "training.detector.trainer" in caplog.text  # it trained (epochs were logged)
    assert (run / "baseline" / "metrics.csv").read_text().count("\n") == metrics_before.count("\n")


def test_rerunning_a_stage_reruns_what_depends_on_it(tiny_pipeline_run, tiny_pipeline_config: Path, tmp_path: Path):
    """After ddpm is forced, features notices the new DDPM and runs; run again, it is skipped. A stage whose
    inputs changed is cleared first, never resumed from the stale outputs."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_pipeline_run[0], run)  # copies modification times too: the copy is "done" as it was
    config = load_config(tiny_pipeline_config)
    assert run_pipeline(config, run, stages=["features"])["features"]["skipped"]
    stale = run / "features" / "left_over.txt"
    stale.write_text("made from the old DDPM")
    run_pipeline(config, run, stages=["ddpm"], force=True)
    res = run_pipeline(config, run, stages=["features"])
    assert not res["features"].get("skipped") and not stale.exists()
    assert run_pipeline(config, run, stages=["features"])["features"]["skipped"]
    # resvae read the old features: it is stale now, and so is everything after it
    later = run_pipeline(config, run, stages=["resvae", "baseline"])
    assert not later["resvae"].get("skipped") and later["baseline"]["skipped"]  # the baseline reads no DDPM


def test_an_interrupted_stage_keeps_its_work_and_a_changed_one_is_cleared(tmp_path: Path):
    from training.pipeline import STAGES, RunContext, stage_key

    run = tmp_path / "run"
    run_pipeline(_tiny(), run, stages=["data"])
    ddpm = next(s for s in STAGES if s.name == "ddpm")
    key = stage_key(RunContext(_tiny(), run), ddpm)
    (run / "ddpm").mkdir()
    (run / "ddpm" / ".running").write_text(key)  # as a killed ddpm stage leaves it
    (run / "ddpm" / "state.pt").write_text("partial work")
    from training.pipeline.runner import _prepare

    _prepare(RunContext(_tiny(), run), ddpm, key, force=False)
    assert (run / "ddpm" / "state.pt").is_file()  # same inputs: kept, the stage resumes from it
    _prepare(RunContext(_tiny(), run), ddpm, "another key", force=False)
    assert not (run / "ddpm" / "state.pt").exists()  # other inputs: cleared


def test_a_stage_that_reads_an_optional_control_brings_it_along():
    from training.pipeline.runner import selected_stages

    base = _tiny()
    assert "continued" not in selected_stages(base, None)  # a plain run never trains the control
    control = config_from_dict({"name": "t", "distill": {"teacher": "continued"}})
    assert {"continued", "distill", "export"} <= selected_stages(control, None)
    assert selected_stages(control, ["data", "baseline"]) == {"data", "baseline"}
    with pytest.raises(ConfigError, match="distill.teacher must be 'ddpm', 'baseline' or 'continued'"):
        config_from_dict({"name": "t", "distill": {"teacher": "continue"}})


def test_run_reuse_links_what_another_run_computed_and_trains_the_rest(tiny_pipeline_run, tiny_pipeline_config: Path,
                                                                       tmp_path: Path, capsys):
    """A teacher experiment on an earlier run's DDPM, features and baseline: `run --reuse RUN` links those and
    trains only what the changed config needs; the earlier run is left as it was."""
    from training.cli import main

    source = tiny_pipeline_run[0]
    before = (source / "teacher" / "stage.json").read_text()
    out = tmp_path / "lever"
    stages = "data,ddpm,features,resvae,baseline,teacher"
    assert main(["run", "--config", str(tiny_pipeline_config), "--out", str(out), "--reuse", str(source),
                 "--set", "teacher.lr=0.0005", "--stages", stages]) == 0
    for stage in ("data", "ddpm", "features", "resvae", "baseline"):
        assert (out / stage).is_symlink() and (out / stage).resolve() == (source / stage).resolve()
    assert not (out / "teacher").is_symlink() and (out / "teacher" / "weights" / "best.safetensors").is_file()
    assert (source / "teacher" / "stage.json").read_text() == before
    # a changed feature config is not the source's: features and everything reading them would be recomputed
    other = tmp_path / "other"
    assert main(["run", "--config", str(tiny_pipeline_config), "--out", str(other), "--reuse", str(source),
                 "--set", "features.timesteps=[5]", "--stages", "data"]) == 0
    assert sorted(p.name for p in other.iterdir() if p.is_symlink()) == ["baseline", "data", "ddpm"]
    capsys.readouterr()
    assert main(["run", "--config", str(tiny_pipeline_config), "--out", str(out), "--reuse",
                 str(tmp_path / "nowhere")]) == 2
    assert f"reuse: no run directory {tmp_path / 'nowhere'}" in capsys.readouterr().err

"""The shared training engine: schedules, EMA, resume rules, the thread budget and per-batch progress."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

from training.engine import loop as engine_loop
from training.engine.checkpoint import save_train_state
from training.engine.ema import ModelEMA, ratio_decay, tau_decay
from training.engine.resume import RunExistsError, resume_state
from training.engine.schedule import WarmupCosine
from training.engine.threads import set_command_line_threads, thread_budget


def test_schedules_warm_up_then_decay_to_their_floor():
    ramp = WarmupCosine(0.01, total_steps=100, warmup_steps=10, floor=0.1, warmup="ramp")
    assert ramp(0) == pytest.approx(0.001) and ramp(5) == pytest.approx(0.0055)
    assert ramp(10) == pytest.approx(0.01) and ramp(100) == pytest.approx(0.001) and ramp(1000) == pytest.approx(0.001)
    assert all(ramp(s) >= ramp(s + 1) for s in range(10, 100))
    scale = WarmupCosine(1e-3, total_steps=50, warmup_steps=5, floor=0.05, warmup="scale")
    # the DDPM / ResVAE form: a cosine over all steps, multiplied by (step + 1) / warmup during the warm-up
    for step in range(50):
        expected = 1e-3 * min(1.0, (step + 1) / 5) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / 50)))
        assert scale(step) == expected  # bit for bit: a stage's numbers do not move with the refactor
    with pytest.raises(ValueError, match="warmup must be 'ramp' or 'scale'"):
        WarmupCosine(1.0, 10, 1, 0.1, warmup="linear")


def test_bias_warm_up_falls_from_its_rate_to_the_schedule_and_reaches_only_the_biases():
    from training.config import TrainConfig
    from training.detector import DefectDetector, DetectorSpec
    from training.detector.trainer import build_optimizer
    from training.engine.loop import TrainLoop

    ramp = WarmupCosine(0.01, total_steps=100, warmup_steps=10, floor=0.1)
    assert ramp.group_rate(0, 0.1) == pytest.approx(0.1) and ramp.group_rate(5, 0.1) == pytest.approx(0.1 - 0.5 * (0.1 - ramp(5)))
    assert all(ramp.group_rate(s, 0.1) == ramp(s) for s in range(10, 100))
    assert all(ramp.group_rate(s, None) == ramp(s) for s in range(100))
    model = DefectDetector(DetectorSpec(2, "n"))
    optimizer = build_optimizer(model, TrainConfig(weight_decay=0.01), warmup_bias_lr=0.1)
    decay, norms, biases = optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith(".bias") for p in biases["params"]) and biases["weight_decay"] == 0
    assert all(p.ndim > 1 for p in decay["params"]) and decay["weight_decay"] == 0.01
    assert len(decay["params"]) + len(norms["params"]) + len(biases["params"]) == len(names)
    loop = TrainLoop(model, optimizer, ramp, clip_norm=10.0, show_progress=False)
    x = torch.randn(1, 3, 64, 64)
    loop.run_epoch(0, [x], 1, lambda b: (model(b).cls_logits.mean(), {}), desc="warm")
    assert biases["lr"] == pytest.approx(0.1) and decay["lr"] == norms["lr"] == pytest.approx(ramp(0))
    assert len(build_optimizer(model, TrainConfig()).param_groups) == 2  # no warm-up: the groups of older runs


def test_ema_rules_follow_the_model():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEMA(model, ratio_decay(0.9), include_buffers=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # updates = 1: decay min(0.9, 1 / 10) = 0.1
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 0.9))
    assert not ema.module.weight.requires_grad
    assert tau_decay(0.9999, 2000)(1) == pytest.approx(0.9999 * (1 - math.exp(-1 / 2000)))
    bn = torch.nn.BatchNorm1d(2)
    ema_bn = ModelEMA(bn, tau_decay(0.5, 1e-9))  # decay 0.5 from the first update
    bn.running_mean.fill_(4.0)
    bn.num_batches_tracked.fill_(7)
    ema_bn.update(bn)
    assert torch.allclose(ema_bn.module.running_mean, torch.full((2,), 2.0))  # float buffers averaged
    assert int(ema_bn.module.num_batches_tracked) == 7  # integer buffers copied


def test_resume_rules(tmp_path: Path):
    state = tmp_path / "state.pt"
    assert resume_state(state, "abc", "auto", tmp_path) is None
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        resume_state(state, "abc", True, tmp_path)
    save_train_state(state, {"epoch": 3, "config_hash": "abc"})
    assert resume_state(state, "abc", "auto", tmp_path)["epoch"] == 3
    assert resume_state(state, "abc", True, tmp_path)["epoch"] == 3
    with pytest.raises(RunExistsError, match="different config"):
        resume_state(state, "xyz", "auto", tmp_path)  # never a silent restart over another config's run
    with pytest.raises(RunExistsError, match="--resume"):
        resume_state(state, "abc", False, tmp_path)
    with pytest.raises(ValueError, match="resume must be"):
        resume_state(state, "abc", "yes", tmp_path)
    assert state.is_file()  # a refusal deletes nothing


def test_thread_budget_order(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert thread_budget() == 3 and thread_budget(5) == 5  # a config value wins over the environment
    set_command_line_threads(2)
    try:
        assert thread_budget(5) == 2  # and --threads over both
    finally:
        set_command_line_threads(None)
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    cpus = len(os.sched_getaffinity(0))
    assert thread_budget() == cpus and thread_budget(world_size=cpus * 4) == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert thread_budget(world_size=2) == max(1, cpus // 2)
    with pytest.raises(ValueError, match="threads must be >= 0"):
        thread_budget(-1)
    with pytest.raises(ValueError, match="--threads must be >= 1"):
        set_command_line_threads(0)


TINY_DDPM_CONFIG = """
name: tiny-ddpm
data: {source: synthetic, synthetic: {num_images: 12, size: 64, max_defects: 1}, val_fraction: 0.25}
model: {size: n, input_size: 64}
ddpm: {image_size: 16, base_width: 8, width_mults: [1, 2], attention_levels: [], epochs: 2, batch_size: 3,
       sample_steps: 4, num_samples: 2}
"""


def test_ddpm_stage_bar_advances_per_batch(tmp_path: Path, monkeypatch):
    from training.config import load_config
    from training.pipeline import run_pipeline

    updates: list[tuple[str, int]] = []

    class RecordingBar:
        def __init__(self, iterable, total, desc, **kwargs):
            self.iterable, self.desc = iterable, desc

        def __iter__(self):
            for n, item in enumerate(self.iterable, 1):
                yield item
                updates.append((self.desc, n))

        def set_postfix(self, *args, **kwargs):
            pass

        def close(self):
            pass

    monkeypatch.setattr(engine_loop, "tqdm", RecordingBar)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_DDPM_CONFIG)
    run_pipeline(load_config(config), tmp_path / "run", stages=["data", "ddpm"])
    # 9 training images, batch 3: three steps in each of the two epochs, each one a tick of its epoch's bar
    assert updates == [("ddpm 1/2", 1), ("ddpm 1/2", 2), ("ddpm 1/2", 3), ("ddpm 2/2", 1), ("ddpm 2/2", 2),
                       ("ddpm 2/2", 3)]


def test_a_stage_started_with_omp_num_threads_1_uses_one_thread(tmp_path: Path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_DDPM_CONFIG)
    code = ("import sys, torch; sys.path.insert(0, sys.argv[1]); from training.cli import main; "
            "code = main(['run', '--config', sys.argv[2], '--out', sys.argv[3], '--stages', 'data,ddpm']); "
            "print('threads', torch.get_num_threads(), torch.get_num_interop_threads()); sys.exit(code)")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, str(REPO), str(config), str(tmp_path / "run")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "threads 1 1" in proc.stdout
    assert "ddpm: 1 compute thread(s)" in proc.stderr  # the number chosen is logged once per stage

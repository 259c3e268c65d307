"""The optimisation loop every training stage runs (DDPM, ResVAE, baseline, teacher, distillation).

Per step: the learning rate from the schedule, the stage's loss, backward, gradient-norm clipping, the
optimizer step and the EMA update; per epoch: a per-batch progress bar with the running loss and ETA, and
sums of the stage's loss parts. :meth:`TrainLoop.state` / :meth:`TrainLoop.restore` carry everything a
resumed run needs; the stage decides where it is saved (:mod:`training.engine.resume`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from training.engine.ema import ModelEMA
from training.engine.schedule import WarmupCosine

StepFn = Callable[[Any], tuple[torch.Tensor, dict[str, float]]]


class TrainLoop:
    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: WarmupCosine,
                 clip_norm: float, ema: ModelEMA | None = None, show_progress: bool = True) -> None:
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.clip_norm, self.ema, self.show_progress = clip_norm, ema, show_progress
        self.lr = schedule.base

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)

    def run_epoch(self, epoch: int, batches: Iterable[Any], num_batches: int, step_fn: StepFn, desc: str,
                  sums: dict[str, float] | None = None, show: str = "loss") -> dict[str, float]:
        """One pass over ``batches``; ``step_fn(batch) -> (loss, parts)``; returns the summed parts.

        The bar shows the running mean of part ``show`` (summed per step, divided by the steps so far)."""
        sums = dict(sums or {})
        bar = tqdm(batches, total=num_batches, desc=desc, leave=False, mininterval=1.0,
                   disable=not self.show_progress)
        for i, batch in enumerate(bar):
            step = epoch * num_batches + i
            self.lr = self.schedule(step)
            for group in self.optimizer.param_groups:
                group["lr"] = self.schedule.group_rate(step, group.get("warmup_from"))
            loss, parts = step_fn(batch)
            self.step(loss)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            if show in sums:
                bar.set_postfix({show: f"{sums[show] / (i + 1):.4f}"})
        bar.close()
        return sums

    def state(self, epoch: int, config_hash: str, **extra: Any) -> dict[str, Any]:
        """What :meth:`restore` needs, plus the stage's own ``extra`` values (tensors, numbers, strings)."""
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "epoch": epoch,
                 "config_hash": config_hash, **extra}
        if self.ema is not None:
            state.update(ema=self.ema.module.state_dict(), ema_updates=self.ema.updates)
        return state

    def restore(self, state: dict[str, Any]) -> int:
        """Load a :meth:`state`; return the epoch to continue from."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and "ema" in state:
            self.ema.module.load_state_dict(state["ema"])
            self.ema.updates = int(state["ema_updates"])
        return int(state["epoch"]) + 1

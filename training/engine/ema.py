"""Exponential moving average of a model's weights, with a warm-up of the decay so early updates count."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn


def tau_decay(decay: float, tau: float) -> Callable[[int], float]:
    """``decay * (1 - exp(-updates / tau))``: the detector stages' rule."""
    return lambda updates: decay * (1 - math.exp(-updates / tau))


def ratio_decay(decay: float) -> Callable[[int], float]:
    """``min(decay, updates / (updates + 9))``: the DDPM's rule."""
    return lambda updates: min(decay, updates / (9 + updates))


class ModelEMA:
    """A frozen copy of ``model`` that follows it by ``ema = d * ema + (1 - d) * model`` after each update.

    ``include_buffers`` averages floating-point buffers too (BatchNorm statistics); integer buffers are copied.
    """

    def __init__(self, model: nn.Module, decay: Callable[[int], float], updates: int = 0,
                 include_buffers: bool = True) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.updates, self.include_buffers = decay, updates, include_buffers

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay(self.updates)
        if not self.include_buffers:
            for pe, pm in zip(self.module.parameters(), model.parameters()):
                pe.mul_(d).add_(pm.detach(), alpha=1 - d)
            return
        src = model.state_dict()
        for name, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(src[name].detach(), alpha=1 - d)
            else:
                value.copy_(src[name])

"""An exponential moving average (EMA) of the weights, the policy a run keeps when train.ema_decay > 0.

Short CPU runs end at a point of a noisy trajectory: neighbouring checkpoints of the same run can
differ by tens of normalised points in the env, and the average over the last few hundred steps is
meant to be the steadier policy. (In the `small` recipe study it was not: off by default,
BENCHMARKS.md.) With decay d the update after step t is

    avg <- avg + (1 - d_t) (weights - avg),   d_t = min(d, (1 + t) / (10 + t))

The warm-up d_t (as in TensorFlow's ExponentialMovingAverage with num_updates) lets the average
follow the fast early changes instead of remembering the random initialisation for 1 / (1 - d) steps.
Buffers are copied, not averaged. The average lives in its own copy of the model, in eval mode.
"""

from __future__ import annotations

import copy

import torch


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float, updates: int = 0) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = updates
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average towards `model`'s weights (call after each optimiser step)."""
        self.updates += 1
        weight = 1.0 - self.current_decay()
        for average, live in zip(self.model.parameters(), model.parameters()):
            average.lerp_(live.detach().to(average.dtype), weight)
        for average, live in zip(self.model.buffers(), model.buffers()):
            average.copy_(live)

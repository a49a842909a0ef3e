"""The optimiser and its schedule, built one way for `mtm train` and for the benchmarks.

AdamW with decay on Linear weights only (MTM.optim_groups), and the fused kernel wherever torch has
one for the device: on CPU it updates all parameters in one pass instead of a dozen foreach passes,
several times faster (BENCHMARKS.md, training step profile). Same update rule, same state_dict
layout, so checkpoints of either kind resume with the other.
"""

from __future__ import annotations

import math

import torch


def build_optimizer(model: torch.nn.Module, tc, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over `model.optim_groups(tc.weight_decay)` with lr and betas of the TrainConfig `tc`."""
    groups = model.optim_groups(tc.weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=tc.lr, betas=tuple(tc.betas), fused=True)
    except RuntimeError:  # a torch without a fused AdamW for this device (CPU before 2.4, MPS)
        return torch.optim.AdamW(groups, lr=tc.lr, betas=tuple(tc.betas))


def build_scheduler(optimizer: torch.optim.Optimizer, tc) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to 0 at tc.steps (the MTM recipe)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup_steps=tc.warmup_steps, total_steps=tc.steps)
    )


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at `step` (0-based, the step about to be taken): rises
    linearly from 1/warmup to 1 over `warmup_steps`, then follows a half cosine to 0 at
    `total_steps`. Warm-up longer than the run is clipped to the run, so short runs still decay."""
    warmup = min(warmup_steps, total_steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(total_steps - warmup, 1), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))

"""Learning-rate schedule: linear warm-up, then cosine decay to zero (the MTM recipe)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at `step` (0-based, the step about to be taken).

    Rises linearly from 1/warmup to 1 over `warmup_steps`, then follows a half cosine to 0 at
    `total_steps`. Warm-up longer than the run is clipped to the run, so short runs still decay.
    """
    warmup = min(warmup_steps, total_steps)
    if step < warmup:
        return (step + 1) / warmup
    span = max(total_steps - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))

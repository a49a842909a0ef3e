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
    """Linear warm-up then cosine decay to 0 at tc.steps (the MTM recipe); a parameter group
    marked ``constant_lr`` (IQL's Q and V, mtm.model.iql) keeps train.lr throughout."""
    def scheduled(s: int) -> float:
        return warmup_cosine(s, warmup_steps=tc.warmup_steps, total_steps=tc.steps)

    def constant(s: int) -> float:
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [constant if group.get("constant_lr") else scheduled for group in optimizer.param_groups])


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at `step` (0-based, the step about to be taken): rises
    linearly from 1/warmup to 1 over `warmup_steps`, then follows a half cosine to 0 at
    `total_steps`. Warm-up longer than the run is clipped to the run: such a run only warms up, its
    last step at the full rate, and never decays (`short_run_warning` says so at the start)."""
    warmup = min(warmup_steps, total_steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(total_steps - warmup, 1), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def learning_rate(tc, step: int) -> float:
    """The learning rate of the 0-based `step` under the TrainConfig `tc`: a function of train.lr,
    train.warmup_steps and train.steps alone, whether the run was resumed or not."""
    return tc.lr * warmup_cosine(step, warmup_steps=tc.warmup_steps, total_steps=tc.steps)


def short_run_warning(tc) -> str | None:
    """One line when train.steps <= train.warmup_steps: the whole run is warm-up."""
    if tc.steps > tc.warmup_steps:
        return None
    return (f"train.steps {tc.steps} <= train.warmup_steps {tc.warmup_steps}: the whole run is warm-up (the "
            f"learning rate rises to train.lr at the last step and never decays); for a short run set "
            f"train.warmup_steps below train.steps, e.g. --set train.warmup_steps={max(tc.steps // 10, 1)}")


def follow_schedule(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, tc,
                    step: int) -> None:
    """After a resume: the learning rate of every step from `step` on is `learning_rate(tc, step)`,
    as in a run planned with this config from the start. A restored scheduler keeps the base rate
    it was saved with and the optimizer the rate of the old schedule, so a resume with another
    train.lr, train.steps or train.warmup_steps would otherwise train one step, or all, at the old
    rates."""
    rate = learning_rate(tc, step)
    scheduler.base_lrs = [tc.lr for _ in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["initial_lr"] = tc.lr
        group["lr"] = tc.lr if group.get("constant_lr") else rate
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # what get_last_lr() reports until the next step


def resume_schedule_note(saved: dict, tc, step: int) -> str | None:
    """One line on what the schedule does when a run resumes at `step` (the steps taken) with a
    train.steps, warmup_steps or lr other than the checkpoint's (`saved`: its train section)."""
    keys = ("steps", "warmup_steps", "lr")
    changed = [k for k in keys if k in saved and saved[k] != getattr(tc, k)]
    if not changed:
        return None
    before = {k: saved.get(k, getattr(tc, k)) for k in keys}
    last = before["lr"] * warmup_cosine(max(step - 1, 0), warmup_steps=before["warmup_steps"],
                                        total_steps=before["steps"])
    what = ", ".join(f"train.{k} {before[k]:g} -> {getattr(tc, k):g}" for k in changed)
    return (f"resuming at step {step} with {what}: the learning rate follows the schedule of a run planned "
            f"with the new values from the start (warm-up {min(tc.warmup_steps, tc.steps)} steps, cosine to 0 "
            f"at step {tc.steps}): step {step} trained at {last:.1e}, step {step + 1} trains at "
            f"{learning_rate(tc, step):.1e}")

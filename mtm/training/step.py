"""One optimisation step of `mtm train`, as an object the loop calls every step.

    sample windows -> draw a mask per sample -> forward (autocast) -> loss -> backward
    -> clip (or measure) the gradient norm -> flag a non-finite loss -> AdamW step -> LR step
    -> update the weight average (train.ema_decay > 0)

It lives apart from the loop so that scripts/bench_train.py times this very step rather than a
copy that could drift from what users run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mtm.model.loss import mtm_loss
from mtm.model.masks import MaskMixture, hide_absent
from mtm.training.ema import WeightAverage


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The generator of one step's windows and masks: a function of (seed, rank, step) only."""
    mixed = np.random.SeedSequence([seed, rank, step]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(mixed[0]) << 32 | int(mixed[1]))


#: The phases of a step, in order, as `TrainStep.__call__` reports them to `mark`.
PHASES = ("data", "fwd+loss", "backward", "optim")


def _no_mark(phase: str) -> None:
    """The default `mark` of TrainStep: the training loop times no phases."""


@dataclass(eq=False)
class TrainStep:
    """What one step needs, built once per run. `forward` is the model itself or its DDP /
    torch.compile wrapper; `sampler` a WindowBatches or WindowSampler; `tc` the TrainConfig."""

    model: torch.nn.Module
    forward: Callable[..., dict[str, torch.Tensor]]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: Any
    mask_fn: MaskMixture
    tc: Any
    batch_size: int  # windows per process
    device: torch.device
    autocast: AbstractContextManager
    rank: int = 0
    image_keys: Sequence[str] = ()
    average: WeightAverage | None = None  # the EMA of the weights, on the process that keeps it
    # Non-finite losses so far, counted on the device: reading it every step would sync the device.
    nonfinite: torch.Tensor = field(init=False)
    clipped: list = field(init=False)  # the parameters train.grad_clip bounds (and train/grad_norm measures)

    def __post_init__(self) -> None:
        self.nonfinite = torch.zeros((), dtype=torch.int32, device=self.device)
        # train.grad_clip bounds the Transformer's step; an MTM's critic (mtm.model.critic) is left
        # out, as IQL clips nothing: its TD gradients would otherwise set the scale of every update.
        skip = {id(p) for p in self.model.critic.parameters()} if getattr(self.model, "has_critic", False) else set()
        self.clipped = [p for p in self.model.parameters() if id(p) not in skip]

    def __call__(self, step: int, mark: Callable[[str], None] = _no_mark
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Train on step `step`'s batch: (loss, its parts, gradient norm), all still on the device.
        `mark(phase)` is called as each of PHASES ends (benchmarks time the phases with it)."""
        tc, model = self.tc, self.model
        gen = step_generator(tc.seed, self.rank, step)
        batch = self.sampler.sample(self.batch_size, gen)
        for key in self.image_keys:  # augmentation shifts drawn from the step's generator too
            model.tokenizers[key].augment_generator = gen
        own_loss = getattr(model, "training_loss", None)
        if own_loss is not None:
            # A model with an objective of its own (IQL, mtm.model.iql): whole windows, no masks.
            mark("data")
            with self.autocast:
                loss, parts = own_loss(batch)
        else:
            visible = self.mask_fn(model.layout, self.batch_size, gen, device=self.device)
            # Per sample, what its episode lacks (no actions, no rewards) is hidden here and unscored
            # in the loss; a batch of complete data carries no flags and skips this.
            visible = hide_absent(visible, model.layout, batch)
            mark("data")
            with self.autocast:
                out = self.forward(batch, visible, batch["valid"])
            out = {k: v.float() for k, v in out.items()}
            # model.awr_beta: each data action's reconstruction weighs by its advantage (IQL's actor).
            awr = getattr(model.config, "awr_beta", 0.0) > 0
            loss, parts = mtm_loss(out, batch, model.tokenizers, visible, batch["valid"],
                                   on=tc.loss_on, weights=tc.loss_weights,
                                   value_expectile=getattr(model.config, "value_expectile", 0.0),
                                   reward_units=getattr(model, "reward_units", None),
                                   token_weights={"actions": model.action_weights(batch)} if awr else None)
            if getattr(model, "has_critic", False):  # TD on the same windows, in fp32 (mtm.model.critic)
                critic, critic_parts = model.critic_loss(batch)
                loss = loss + critic
                parts = {**parts, **critic_parts}
        mark("fwd+loss")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        mark("backward")
        if tc.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.clipped, tc.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.clipped if p.grad is not None])
        self.nonfinite += (~torch.isfinite(loss.detach())).int()
        self.optimizer.step()
        self.scheduler.step()
        after = getattr(model, "after_optimizer_step", None)
        if after is not None:  # e.g. IQL's target networks follow the weights just updated
            after()
        if getattr(model, "has_critic", False):
            self._extra_critic_updates(gen)
        if self.average is not None:
            self.average.update(model)
        mark("optim")
        return loss, parts, grad_norm

    def _extra_critic_updates(self, gen: torch.Generator) -> None:
        """model.critic_updates - 1 more TD updates of an MTM's critic, each on a batch of its own
        drawn from the step's generator (so a resumed run repeats them): the Transformer's
        parameters have no gradient then, so the optimiser leaves them (and their moments) as they are."""
        model = self.model
        for _ in range(model.config.critic_updates - 1):
            batch = self.sampler.sample(self.batch_size, gen)
            self.optimizer.zero_grad(set_to_none=True)
            loss, _ = model.critic_loss(batch)
            loss.backward()
            # Counted like the step's own loss: a critic gone NaN here must not reach a checkpoint.
            self.nonfinite += (~torch.isfinite(loss.detach())).int()
            self.optimizer.step()
            model.after_optimizer_step()

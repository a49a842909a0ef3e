"""What a run builds before its first step, one function a part (mtm.training.loop calls them in
order): the model (new, or the checkpoint's), the validation batches it can score, the optimiser
with its schedule and weight average (restored on resume), the training step (DDP, torch.compile,
precision), the logs, and `RunParts`, which holds them and saves checkpoints of them."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from mtm.checkpoint import Checkpoint, capture_rng_state, restore_rng_state, save_checkpoint
from mtm.config import RunConfig, config_to_dict, format_config, save_config
from mtm.data.batches import WindowBatches
from mtm.errors import ConfigError, MTMWarning
from mtm.hardware import Precision
from mtm.model.build import build_model, model_from_spec
from mtm.model.masks import MaskMixture
from mtm.model.tokenizers import build_tokenizers
from mtm.run_metadata import RunMetadata
from mtm.training.ema import WeightAverage
from mtm.training.metadata import describe_runtime
from mtm.training.metrics import Logger
from mtm.training.optim import (build_optimizer, build_scheduler, follow_schedule, resume_schedule_note,
                                short_run_warning)
from mtm.training.run_data import RunData, data_paths, no_validation_reason
from mtm.training.rundir import CONFIG_FILE, RunDirectory
from mtm.training.runtime import Runtime, seed_everything
from mtm.training.step import TrainStep


def build_run_model(cfg: RunConfig, rt: Runtime, data: RunData, checkpoint: Checkpoint | None) -> torch.nn.Module:
    """The checkpoint's model with its weights, or a new one for the data, on the run's device."""
    if checkpoint is not None:
        model = model_from_spec(checkpoint.run_metadata.model)
        model.load_state_dict(checkpoint.model_state)
    else:
        frame_shapes = {key: data.train_sampler.frame_shape(key) for key in data.image_keys}
        model = build_model(cfg.model, build_tokenizers(cfg.tokens, data.stats, frame_shapes), cfg.data.window)
        fit = getattr(model, "fit_to_data", None)
        if fit is not None:  # constants a model takes from its training data (IQL: reward scale, action bounds)
            fit(data.train)
        if getattr(model, "has_reward", False):
            model.set_reward_stats(data.stats["rewards"].mean, data.stats["rewards"].std)
    return model.to(rt.device)


def validation_batches(cfg: RunConfig, rt: Runtime, data: RunData, model: torch.nn.Module) -> WindowBatches | None:
    """The held-out batches rank 0 validates on; None, with a warning saying why, where asking for
    validation would score nothing (the batches are then closed)."""
    if rt.is_main and cfg.train.val_every and cfg.data.val_fraction > 0:
        reason = no_validation_reason(data, model)
        if reason is not None:
            warnings.warn(f"no validation: {reason}", MTMWarning, stacklevel=3)
            if data.val_sampler is not None:
                data.val_sampler.close()
            return None
    return data.val_sampler


@dataclass
class Optimisation:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    average: WeightAverage | None  # train.ema_decay > 0, on rank 0 only
    start_step: int


def build_optimisation(cfg: RunConfig, rt: Runtime, model: torch.nn.Module,
                       checkpoint: Checkpoint | None) -> Optimisation:
    """AdamW, its schedule and the weight average, in the state the checkpoint saved (if any). The
    schedule is the config's: a resume with another train.lr, warmup_steps or steps follows it
    (one warning line says so), as does a run that is all warm-up (mtm.training.optim)."""
    tc = cfg.train
    optimizer = build_optimizer(model, tc, rt.device)
    scheduler = build_scheduler(optimizer, tc)
    start_step, state = 0, {}
    if checkpoint is not None:
        start_step, state = _restore_train_state(checkpoint, model, optimizer, scheduler, rt, tc.seed)
        # The schedule is a function of the config alone (docs/configuration.md): a resume with another
        # train.steps, warmup_steps or lr follows the new schedule from here, and says so.
        note = resume_schedule_note(checkpoint.config.get("train", {}), tc, start_step)
        if note is not None:
            follow_schedule(optimizer, scheduler, tc, start_step)
            if rt.is_main:
                warnings.warn(note, MTMWarning, stacklevel=3)
    short_run = short_run_warning(tc)
    if short_run is not None and rt.is_main:
        warnings.warn(short_run, MTMWarning, stacklevel=3)
    average = None
    if tc.ema_decay > 0 and rt.is_main:  # only rank 0 validates, evaluates and saves, so only it keeps the average
        average = WeightAverage(model, tc.ema_decay, updates=int(state.get("ema_updates", 0)))
        if "raw_model" in state:  # resumed from a checkpoint whose model file is the average
            average.model.load_state_dict(checkpoint.model_state)
    return Optimisation(optimizer, scheduler, average, start_step)


def _restore_train_state(checkpoint: Checkpoint, model, optimizer, scheduler, rt: Runtime,
                         seed: int) -> tuple[int, dict]:
    """Optimizer, schedule and RNG state of a checkpoint, and the trained weights where the
    checkpoint's model file holds their average; returns the step to continue from and the state.
    Rank 0 restores its saved RNG; other ranks reseed dropout from (seed, rank, step)."""
    state = checkpoint.load_train_state(device=rt.device)
    if "raw_model" in state:  # saved with train.ema_decay > 0: model.safetensors is the average
        model.load_state_dict(state["raw_model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    step = int(state["step"])
    if rt.is_main:
        restore_rng_state(state["rng"])
    else:
        seed_everything(int(np.random.SeedSequence([seed, rt.rank, step]).generate_state(1)[0]))
    return step, state


def build_train_step(cfg: RunConfig, rt: Runtime, model: torch.nn.Module, opt: Optimisation, data: RunData,
                     precision: Precision) -> TrainStep:
    """One optimiser step of the run: the model's forward wrapped for DDP and torch.compile as
    asked, under the run's precision."""
    tc = cfg.train
    forward = model
    if rt.distributed and hasattr(model, "training_loss"):
        raise ConfigError(f"model.kind={cfg.model.kind} trains in one process; run it without torchrun")
    if rt.distributed and getattr(model, "has_critic", False):  # its loss is outside DDP's forward
        raise ConfigError("model.critic trains in one process; run it without torchrun or set model.critic=false")
    if rt.distributed:
        forward = DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    if tc.compile:
        forward = torch.compile(forward, dynamic=True)
    return TrainStep(model, forward, opt.optimizer, opt.scheduler, data.train_sampler, MaskMixture.from_config(tc.mask),
                     tc, batch_size=tc.batch_size // rt.world_size, device=rt.device,
                     autocast=precision.autocast(rt.device), rank=rt.rank, image_keys=data.image_keys,
                     average=opt.average)


def open_logs(cfg: RunConfig, rt: Runtime, run: RunDirectory, data: RunData, metadata: RunMetadata,
              start_step: int, resumed: bool) -> Logger:
    """The run's logger; rank 0 saves the resolved config and, on a new run, logs what it is."""
    logger = Logger(run.path, enabled=rt.is_main, resume_step=start_step if resumed else None,
                    loggers=cfg.train.loggers, config=config_to_dict(cfg))
    if rt.is_main:
        save_config(cfg, run.path / CONFIG_FILE)
        if not resumed:
            logger.text("hparams", "```\n" + format_config(cfg) + "\n```")
            logger.text("runtime", describe_runtime(metadata.runtime))
            logger.text("data", f"{', '.join(data_paths(cfg))}: {data.train.num_episodes} train / "
                                f"{data.val.num_episodes} val episodes, {data.train_sampler.num_windows} train windows")
    return logger


@dataclass
class RunParts:
    """Everything the steps of a run use, built by the functions above."""

    cfg: RunConfig
    rt: Runtime
    run: RunDirectory
    data: RunData
    val_batches: WindowBatches | None
    model: torch.nn.Module
    opt: Optimisation
    train_step: TrainStep
    metadata: RunMetadata
    logger: Logger

    @property
    def policy_model(self) -> torch.nn.Module:
        """What is saved, validated and evaluated: the weight average when the run keeps one."""
        return self.opt.average.model if self.opt.average is not None else self.model

    def save(self, step: int) -> Path:
        """A checkpoint of step `step` (rank 0 only); the run directory is then committed."""
        opt = self.opt
        train_state = {"optimizer": opt.optimizer.state_dict(), "scheduler": opt.scheduler.state_dict(),
                       "step": step, "rng": capture_rng_state()}
        if opt.average is not None:
            train_state.update(raw_model=self.model.state_dict(), ema_updates=opt.average.updates)
        path = save_checkpoint(self.run.path, step, model_state=self.policy_model.state_dict(),
                               config=config_to_dict(self.cfg), metadata=self.metadata.to_dict(),
                               train_state=train_state, keep_last=self.cfg.train.keep_last)
        self.run.commit()  # the new run has a checkpoint: an earlier run it replaces can go now
        return path

    def close(self) -> None:
        self.logger.close()
        for batches in (self.data.train_sampler, self.val_batches):
            if batches is not None:
                batches.close()

"""`mtm train`: the training loop, single device by default, DDP under torchrun.

    data -> train/val split by episode -> statistics of the train split -> tokenizers -> MTM
    every step (mtm.training.step): sample windows -> draw a mask per sample -> forward -> loss -> AdamW step
    every log_every: train/... scalars; every val_every: val/... prediction errors;
    every eval_every: eval/... returns and normalised score of rollouts in the env (rank 0);
    every save_every and at the end: an atomic checkpoint (rank 0 only)

The loop's parts live next to it: mtm.training.run_data reads, checks and windows the data,
mtm.training.metadata builds what every checkpoint carries besides weights, mtm.training.metrics
logs (TensorBoard, metrics.jsonl) and keeps the loss sums and training clocks between logs.

Reproducibility. The windows and masks of step s are drawn from a generator seeded by
(seed, rank, s) alone, so a resumed run draws exactly what the uninterrupted run would have, and
dropout's global RNG state is saved in each checkpoint. With train.deterministic on, a run
resumed from a checkpoint repeats the uninterrupted run's losses step for step (tested). Under
DDP, ranks other than 0 reseed dropout from (seed, rank, step) on resume.

Failure. A non-finite loss is detected (without a per-step device sync: a flag accumulates on the
device and is read at every log and before every save), and the run stops with a clear message;
nothing is saved after it, so the last checkpoint is the last good one. Ctrl-C finishes the
current step, saves a checkpoint and stops. A run that fails before its first checkpoint leaves the
run directory as it found it (mtm.training.rundir: the lock, --overwrite, recovery after a kill).
"""

from __future__ import annotations

import signal
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from torch.nn.parallel import DistributedDataParallel

from mtm.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from mtm.config import RunConfig, config_to_dict, format_config, save_config
from mtm.data.stats import ModalityStats
from mtm.errors import ConfigError, DataError, MTMError, MTMWarning, OutputError
from mtm.evaluation.predictions import prediction_errors
from mtm.evaluation.rollouts import evaluate_policy, policy_fields, references_for
from mtm.hardware import resolve_precision
from mtm.io import write_failure
from mtm.model.build import build_model, model_from_spec
from mtm.model.masks import MaskMixture
from mtm.model.tokenizers import BinnedTokenizer, ContinuousTokenizer, ImageTokenizer, Tokenizer
from mtm.policy import MTMPolicy, check_target_fraction
from mtm.rollout import PixelSpec
from mtm.training.ema import WeightAverage
from mtm.training.memory import release_free_memory
from mtm.training.metadata import describe_runtime, run_metadata, runtime_info
from mtm.training.metrics import Logger, LossMeter, eval_scalars, val_scalars
from mtm.training.optim import (build_optimizer, build_scheduler, follow_schedule, resume_schedule_note,
                                short_run_warning)
from mtm.training.progress import TrainProgress, interactive
from mtm.training.run_data import data_paths, load_run_data, no_validation_reason
from mtm.training.rundir import CONFIG_FILE, METRICS_FILE, RunDirectory
from mtm.training.runtime import Runtime, seed_everything, setup_runtime, teardown_runtime
from mtm.training.step import TrainStep
from mtm.video import RolloutMedia


class TrainingDiverged(MTMError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path | None
    val: dict
    interrupted: bool = False
    eval: dict | None = None  # the last in-env evaluation report (train.eval_every > 0)
    is_main: bool = True  # False on torchrun ranks other than 0


# ---------------------------------------------------------------------------------------------
# Building blocks


def build_tokenizers(cfg: RunConfig, stats: dict[str, ModalityStats],
                     frame_shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, Tokenizer]:
    """Tokenizers in the token order states -> images -> returns -> actions (the autoregressive
    order; images are observations). frame_shapes: (H, W, C) per image key to tokenize."""
    tc = cfg.tokens

    def make(name: str, kind: str) -> Tokenizer:
        if kind == "binned":
            return BinnedTokenizer.from_stats(stats[name], tc.num_bins, name=name)
        return ContinuousTokenizer.from_stats(stats[name], tc.min_std, name=name)

    tokenizers: dict[str, Tokenizer] = {"states": make("states", tc.states)}
    for key, (height, width, channels) in (frame_shapes or {}).items():
        tokenizers[key] = ImageTokenizer(height, width, channels, encoder=tc.image_encoder,
                                         patch_size=tc.image_patch_size, keypoints=tc.image_keypoints,
                                         augment_pad=tc.image_augment_pad, name=key)
    if tc.use_returns:
        tokenizers["returns"] = make("returns", "continuous")
    tokenizers["actions"] = make("actions", tc.actions)
    return tokenizers


class _StopRequest:
    """Turns the first Ctrl-C into a flag read at step boundaries (a second one interrupts now)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _evaluate_in_env(model, metadata: dict, tc, env_id: str, run_dir: Path, step: int) -> dict:
    """Roll the current model out in its env; training's RNG streams and the model's mode are left
    exactly as they were."""
    # The policy acts at the run's own precision unless train.eval_policy.precision says otherwise.
    policy = tc.eval_policy if tc.eval_policy.precision != "auto" else tc.eval_policy.replace(precision=tc.precision)
    rng = capture_rng_state()
    was_training = model.training
    built: list[MTMPolicy] = []
    try:
        def factory(slots: int) -> MTMPolicy:
            built.append(MTMPolicy(model, metadata, policy, num_envs=slots, device=next(model.parameters()).device))
            return built[-1]

        media = None
        if tc.eval_video:
            # The video and, next to it, its contact sheet (also logged to TensorBoard by the caller).
            videos = run_dir / "videos"
            videos.mkdir(parents=True, exist_ok=True)
            media = RolloutMedia(video=videos / f"step_{step:08d}.mp4", contact_sheet=videos / f"step_{step:08d}.png",
                                 quality=tc.eval_video_quality)
        report = evaluate_policy(factory, metadata, env_id, episodes=tc.eval_episodes, num_envs=tc.eval_num_envs,
                                 seed=tc.eval_seed, media=media,
                                 pixels=PixelSpec.from_dict(metadata["data_info"].get("pixels")))
        # The mode `auto` resolved to (and the RCBC target), as `mtm eval` reports them.
        return {**report, **policy_fields(built[0], policy)}
    finally:
        model.train(was_training)
        restore_rng_state(rng)


def _restore_train_state(checkpoint, model, optimizer, scheduler, rt: Runtime, seed: int) -> tuple[int, dict]:
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


# ---------------------------------------------------------------------------------------------
# The loop


def train(cfg: RunConfig, *, resume: str | Path | None = None, overwrite: bool = False,
          progress: bool = True, say: Callable[[str], None] | None = print) -> TrainResult:
    """Train (or continue) a run. `resume`: a run directory whose `last` checkpoint to continue.
    `say` prints, on rank 0, the device, precision and threads and the run's paths at start, then
    a line per log step (mtm.training.progress), validation and evaluation; None: quiet.
    `progress`: a bar instead of the step lines, where stdout and stderr are terminals."""
    rt = setup_runtime(cfg.train.device)
    try:
        return _train(cfg, rt, resume=resume, overwrite=overwrite, progress=progress, say=say)
    finally:
        teardown_runtime(rt)


def _train(cfg: RunConfig, rt: Runtime, *, resume, overwrite: bool, progress: bool,
           say: Callable[[str], None] | None) -> TrainResult:
    tc = cfg.train
    if not cfg.data.path:
        raise ConfigError("no dataset given: pass --data PATH (or --set data.path=PATH)")
    if tc.batch_size % rt.world_size:
        raise ConfigError(f"train.batch_size {tc.batch_size} is not divisible by the {rt.world_size} processes")
    if tc.eval_every and tc.eval_policy.target_fraction is not None:
        try:
            check_target_fraction(tc.eval_policy.target_fraction)
        except ConfigError as exc:
            raise ConfigError(f"train.eval_policy.target_fraction: {exc}") from None
    run_dir = Path(resume if resume is not None else tc.run_dir)
    # Rank 0 owns the run directory. It is checked before anything is read, locked for the whole
    # run, and an earlier run is set aside only once the new one is known to be valid and deleted
    # only once the new one has a checkpoint (mtm.training.rundir).
    run = RunDirectory(run_dir, enabled=rt.is_main)
    run.check(overwrite=overwrite, resume=resume is not None)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
    seed_everything(tc.seed + rt.rank)
    try:
        with run.acquire(overwrite=overwrite, resume=resume is not None):
            return _train_locked(cfg, rt, run, resume=resume, overwrite=overwrite, progress=progress, say=say)
    except (OSError, RuntimeError, SafetensorError) as exc:  # a full disk, a read-only mount...
        failure = write_failure(exc, run_dir)
        if failure is None:
            raise
        if (run.committed or resume is not None) and (run_dir / "checkpoints" / "last").is_file():
            failure = OutputError(f"{failure}; the last checkpoint is intact: once the disk allows it, "
                                  f"continue with: mtm train --resume {run_dir}")
        raise failure from None


def _train_locked(cfg: RunConfig, rt: Runtime, run: RunDirectory, *, resume, overwrite: bool,
                  progress: bool, say: Callable[[str], None] | None) -> TrainResult:
    tc = cfg.train
    run_dir = run.path
    local_batch = tc.batch_size // rt.world_size
    checkpoint = None
    if resume is not None:
        checkpoint = load_checkpoint(run_dir)
        if not checkpoint.has_train_state:
            raise DataError(f"{checkpoint.path}: holds no training state to resume from")

    run_data = load_run_data(cfg, rt, checkpoint)
    train_sampler, val_sampler, image_keys = run_data.train_sampler, run_data.val_sampler, run_data.image_keys
    stats = run_data.stats

    if checkpoint is not None:
        model = model_from_spec(checkpoint.metadata["model"])
        model.load_state_dict(checkpoint.model_state)
    else:
        frame_shapes = {key: train_sampler.frame_shape(key) for key in image_keys}
        model = build_model(cfg.model, build_tokenizers(cfg, stats, frame_shapes), cfg.data.window)
    model.to(rt.device)
    if rt.is_main and tc.val_every and cfg.data.val_fraction > 0:
        reason = no_validation_reason(run_data, model)
        if reason is not None:
            warnings.warn(f"no validation: {reason}", MTMWarning, stacklevel=2)
            if val_sampler is not None:
                val_sampler.close()
                val_sampler = None
    baseline_means = {name: torch.as_tensor(stats[name].mean) for name in ("states", "actions")}

    optimizer = build_optimizer(model, tc, rt.device)
    scheduler = build_scheduler(optimizer, tc)
    start_step, state = 0, {}
    if checkpoint is not None:
        start_step, state = _restore_train_state(checkpoint, model, optimizer, scheduler, rt, tc.seed)
        if tc.steps < start_step:  # before config.yaml is rewritten with the shorter length
            raise ConfigError(f"{run_dir} is at step {start_step} and train.steps is {tc.steps}: nothing to train; "
                              f"resume with --set train.steps=N for some N > {start_step}")
        # The schedule is a function of the config alone (docs/training.md): a resume with another
        # train.steps, warmup_steps or lr follows the new schedule from here, and says so.
        note = resume_schedule_note(checkpoint.config.get("train", {}), tc, start_step)
        if note is not None:
            follow_schedule(optimizer, scheduler, tc, start_step)
            if rt.is_main:
                warnings.warn(note, MTMWarning, stacklevel=2)
    if rt.is_main and short_run_warning(tc):
        warnings.warn(short_run_warning(tc), MTMWarning, stacklevel=2)
    average = None
    if tc.ema_decay > 0 and rt.is_main:  # only rank 0 validates, evaluates and saves, so only it keeps the average
        average = WeightAverage(model, tc.ema_decay, updates=int(state.get("ema_updates", 0)))
        if "raw_model" in state:  # resumed from a checkpoint whose model file is the average
            average.model.load_state_dict(checkpoint.model_state)
    policy_model = average.model if average is not None else model  # what is saved, validated and evaluated

    forward = model
    if rt.distributed:
        forward = DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    if tc.compile:
        forward = torch.compile(forward, dynamic=True)
    precision = resolve_precision(tc.precision, rt.device)
    train_step = TrainStep(model, forward, optimizer, scheduler, train_sampler, MaskMixture.from_config(tc.mask), tc,
                           batch_size=local_batch, device=rt.device, autocast=precision.autocast(rt.device),
                           rank=rt.rank, image_keys=image_keys, average=average)
    runtime = runtime_info(rt, precision)
    if rt.is_main and say is not None:
        say(describe_runtime(runtime))
        say(f"run directory {run_dir}: config {run_dir / CONFIG_FILE}, metrics {run_dir / METRICS_FILE} "
            f"(TensorBoard: tensorboard --logdir {run_dir})")

    metadata = {**run_metadata(cfg, run_data, model), "runtime": runtime}
    if rt.is_main and tc.eval_every:  # once, not at every evaluation
        references = references_for(metadata, run_data.eval_env)
        if references is not None and references.get("warning"):
            warnings.warn(references["warning"], MTMWarning, stacklevel=2)
    if checkpoint is None:
        run.begin(overwrite)  # everything is validated: from here on the run writes
    logger = Logger(run_dir, enabled=rt.is_main, resume_step=start_step if checkpoint else None)
    if rt.is_main:
        save_config(cfg, run_dir / CONFIG_FILE)
        if checkpoint is None:
            logger.text("hparams", "```\n" + format_config(cfg) + "\n```")
            logger.text("runtime", describe_runtime(runtime))
            logger.text("data", f"{', '.join(data_paths(cfg))}: {run_data.train.num_episodes} train / "
                                f"{run_data.val.num_episodes} val episodes, {train_sampler.num_windows} train windows")

    def save(step: int) -> Path:
        train_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                       "step": step, "rng": capture_rng_state()}
        if average is not None:
            train_state.update(raw_model=model.state_dict(), ema_updates=average.updates)
        path = save_checkpoint(run_dir, step, model_state=policy_model.state_dict(), config=config_to_dict(cfg),
                               metadata=metadata, train_state=train_state, keep_last=tc.keep_last)
        run.commit()  # the new run has a checkpoint: an earlier run it replaces can go now
        return path

    last_saved = checkpoint.path if checkpoint is not None else None
    meter = LossMeter(model.outputs, rt.device, logger.clocks)
    val_errors: dict = {}
    eval_report: dict | None = None
    interrupted = False

    def check_finite(step: int) -> None:
        if int(train_step.nonfinite.item()):
            where = f"{last_saved} is the last good checkpoint" if last_saved else "no checkpoint was saved"
            raise TrainingDiverged(
                f"loss became NaN/inf before step {step}; stopped ({where}). "
                f"Try a lower train.lr, train.grad_clip > 0, or train.precision=fp32"
            )

    # A bar only where it can be redrawn in place; elsewhere (a log file, --no-progress) one line per log step.
    report = TrainProgress(say if rt.is_main else None, total=tc.steps, start=start_step,
                           bar=progress and interactive())

    model.train()
    step = start_step
    with _StopRequest() as stop:
        try:
            while step < tc.steps:
                loss, parts, grad_norm = train_step(step)
                step += 1
                meter.add(loss, parts, grad_norm)
                report.step()

                if step % tc.log_every == 0 or step == tc.steps:
                    check_finite(step)
                    scalars = meter.flush(tc.batch_size)
                    scalars["train/lr"] = scheduler.get_last_lr()[0]
                    logger.scalars(step, scalars)
                    report.logged(step, scalars)
                    if rt.device.type == "cpu":
                        release_free_memory()  # see mtm.training.memory: resident memory stays flat
                    meter.restart_clock()  # as before the meter: logging and trimming are not training time

                if rt.is_main and val_sampler is not None and tc.val_every and (
                    step % tc.val_every == 0 or step == tc.steps
                ):
                    val_errors = prediction_errors(policy_model, val_sampler, baseline_means, max_windows=tc.val_windows)
                    logger.scalars(step, val_scalars(val_errors))
                    report.validated(step, val_errors)
                    meter.restart_clock()  # validation time is not training throughput

                if rt.is_main and tc.eval_every and (step % tc.eval_every == 0 or step == tc.steps):
                    eval_report = _evaluate_in_env(policy_model, metadata, tc, run_data.eval_env, run_dir, step)
                    logger.scalars(step, eval_scalars(eval_report))
                    report.evaluated(step, eval_report)
                    if eval_report.get("contact_sheet"):
                        logger.image("eval/contact_sheet", eval_report["contact_sheet"], step)
                    meter.restart_clock()

                if (tc.save_every and step % tc.save_every == 0) or step == tc.steps or stop.requested:
                    check_finite(step)
                    if rt.is_main:
                        last_saved = save(step)
                    meter.restart_clock()
                if stop.requested:
                    interrupted = True
                    break
        finally:
            report.close()
            logger.close()
            for batches in (train_sampler, val_sampler):
                if batches is not None:
                    batches.close()
    return TrainResult(run_dir=run_dir, step=step, checkpoint=last_saved, val=val_errors,
                       interrupted=interrupted, eval=eval_report, is_main=rt.is_main)


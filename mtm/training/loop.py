"""`mtm train`: the training loop, single device by default, DDP under torchrun.

    data -> train/val split by episode -> statistics of the train split -> tokenizers -> MTM
    every step (mtm.training.step): sample windows -> draw a mask per sample -> forward -> loss -> AdamW step
    every log_every: train/... scalars; every val_every: val/... prediction errors;
    every eval_every: eval/... returns and normalised score of rollouts in the env (rank 0);
    every save_every and at the end: an atomic checkpoint (rank 0 only)

The loop's parts live next to it: mtm.training.run_data reads, checks and windows the data,
mtm.training.build builds the model, optimiser, weight average, training step and logs from it,
mtm.training.metadata what every checkpoint carries besides weights, mtm.training.metrics logs
(TensorBoard, metrics.jsonl) and keeps the loss sums and training clocks between logs, and
mtm.training.progress shows a person the run (a bar on a terminal, else a timestamped line per log
step; a line per validation and evaluation).

Reproducibility. The windows and masks of step s are drawn from a generator seeded by
(seed, rank, s) alone, so a resumed run draws exactly what the uninterrupted run would have, and
dropout's global RNG state is saved in each checkpoint. With train.deterministic on, a run
resumed from a checkpoint repeats the uninterrupted run's losses step for step (tested). Under
DDP, ranks other than 0 reseed dropout from (seed, rank, step) on resume.

Failure. A non-finite loss is detected (without a per-step device sync: a flag accumulates on the
device and is read at every log and before every save), and the run stops with a clear message;
nothing is saved after it, so the last checkpoint is the last good one. Ctrl-C or SIGTERM (a
scheduler preempting the job) finishes the current step, saves a checkpoint and stops. A run that fails before its first checkpoint leaves the
run directory as it found it (mtm.training.rundir: the lock, --overwrite, recovery after a kill).
"""

from __future__ import annotations

import signal
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from mtm.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, step_name
from mtm.config import RunConfig
from mtm.errors import ConfigError, DataError, MTMError, MTMWarning, OutputError
from mtm.evaluation.critic import critic_check
from mtm.evaluation.predictions import prediction_errors
from mtm.evaluation.rollouts import evaluate_policy, policy_fields, references_for
from mtm.hardware import resolve_precision
from mtm.interrupts import STOP_SIGNALS, StopRequest
from mtm.io import write_failure
from mtm.policy import MTMPolicy, check_target_fraction
from mtm.rollout import PixelSpec
from mtm.run_metadata import RunMetadata
from mtm.training.build import (RunParts, build_optimisation, build_run_model, build_train_step, open_logs,
                                validation_batches)
from mtm.training.memory import release_free_memory
from mtm.training.metadata import describe_runtime, run_metadata, runtime_info
from mtm.training.metrics import LossMeter, eval_scalars, require_loggers, val_scalars
from mtm.training.progress import TrainProgress, interactive
from mtm.training.run_data import load_run_data
from mtm.training.rundir import CONFIG_FILE, METRICS_FILE, RunDirectory
from mtm.training.runtime import Runtime, seed_everything, setup_runtime, teardown_runtime
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
    stop_signal: int = signal.SIGINT  # what interrupted it: Ctrl-C or SIGTERM (the exit code follows it)
    eval: dict | None = None  # the last in-env evaluation report (train.eval_every > 0)
    is_main: bool = True  # False on torchrun ranks other than 0


# ---------------------------------------------------------------------------------------------
# Building blocks


def _evaluate_in_env(model, metadata: RunMetadata, tc, env_id: str, run_dir: Path, step: int) -> dict:
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
            media = RolloutMedia(video=videos / f"{step_name(step)}.mp4", contact_sheet=videos / f"{step_name(step)}.png",
                                 quality=tc.eval_video_quality)
        report = evaluate_policy(factory, metadata, env_id, episodes=tc.eval_episodes, num_envs=tc.eval_num_envs,
                                 seed=tc.eval_seed, media=media, pixels=PixelSpec.from_dict(metadata.data_info.pixels))
        # The mode `auto` resolved to (and the RCBC target, the planner), as `mtm eval` reports them.
        return {**report, **policy_fields(built[0], policy)}
    finally:
        model.train(was_training)
        restore_rng_state(rng)


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
    if tc.eval_every and tc.eval_policy.cuda_graph and rt.device.type != "cuda":
        raise ConfigError(f"train.eval_policy.cuda_graph needs a CUDA device; this run trains on {rt.device} "
                          "(leave it false)")
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
    """Build the run's parts (mtm.training.build), in an order where everything is checked before
    the run directory is written to, then run its steps."""
    require_loggers(cfg.train.loggers)
    checkpoint = None
    if resume is not None:
        checkpoint = load_checkpoint(run.path)
        if not checkpoint.has_train_state:
            raise DataError(f"{checkpoint.path}: holds no training state to resume from")
        if cfg.train.steps < checkpoint.step:  # before config.yaml is rewritten with the shorter length
            raise ConfigError(f"{run.path} is at step {checkpoint.step} and train.steps is {cfg.train.steps}: "
                              f"nothing to train; resume with --set train.steps=N for some N > {checkpoint.step}")
    data = load_run_data(cfg, rt, checkpoint)
    model = build_run_model(cfg, rt, data, checkpoint)
    val_batches = validation_batches(cfg, rt, data, model)
    opt = build_optimisation(cfg, rt, model, checkpoint)
    precision = resolve_precision(cfg.train.precision, rt.device, fp32_only=model.fp32_only)
    train_step = build_train_step(cfg, rt, model, opt, data, precision)
    runtime = runtime_info(rt, precision)
    if rt.is_main and say is not None:
        say(describe_runtime(runtime))
        frames = data.train_sampler.describe_frames()
        if frames:
            say(frames)
        say(f"run directory {run.path}: config {run.path / CONFIG_FILE}, metrics {run.path / METRICS_FILE} "
            f"(TensorBoard: tensorboard --logdir {run.path})")
    metadata = run_metadata(cfg, data, model).replace(runtime=runtime)
    if rt.is_main and cfg.train.eval_every:  # once, not at every evaluation
        references = references_for(metadata, data.eval_env)
        if references is not None and references.get("warning"):
            warnings.warn(references["warning"], MTMWarning, stacklevel=2)
    if checkpoint is None:
        run.begin(overwrite)  # everything is validated: from here on the run writes
    logger = open_logs(cfg, rt, run, data, metadata, opt.start_step, resumed=checkpoint is not None)
    parts = RunParts(cfg, rt, run, data, val_batches, model, opt, train_step, metadata, logger)
    return _run_steps(parts, last_saved=checkpoint.path if checkpoint is not None else None, progress=progress,
                      say=say)


def _run_steps(parts: RunParts, *, last_saved: Path | None, progress: bool,
               say: Callable[[str], None] | None) -> TrainResult:
    """Steps from the run's start step to train.steps, with logging, validation, evaluation and
    checkpoints at their intervals; Ctrl-C or SIGTERM saves and stops at the next step boundary. What a
    person sees meanwhile: mtm.training.progress (a bar, or a line per log step)."""
    tc, rt, step = parts.cfg.train, parts.rt, parts.opt.start_step
    meter = LossMeter(parts.model.outputs, rt.device, parts.logger.clocks)
    val_errors: dict = {}
    eval_report: dict | None = None
    interrupted = False
    # A bar only where it can be redrawn in place; elsewhere (a log file, --no-progress) one line per log step.
    report = TrainProgress(say if rt.is_main else None, total=tc.steps, start=step, bar=progress and interactive())

    def due(every: int) -> bool:
        return bool(every) and (step % every == 0 or step == tc.steps)

    parts.model.train()
    # Ctrl-C or SIGTERM: save at the next step boundary and stop. A torchrun worker leaves SIGTERM
    # to torchrun, which stops all ranks together (one rank stopping alone would hang the others).
    with StopRequest(signals=(signal.SIGINT,) if rt.distributed else STOP_SIGNALS) as stop:
        try:
            while step < tc.steps:
                loss, losses, grad_norm = parts.train_step(step)
                step += 1
                meter.add(loss, losses, grad_norm)
                report.step()
                if due(tc.log_every):
                    _check_finite(parts, step, last_saved)
                    _log_training(parts, meter, report, step)
                if rt.is_main and parts.val_batches is not None and due(tc.val_every):
                    val_errors = _validate(parts, report, step)
                    meter.restart_clock()  # validation time is not training throughput
                if rt.is_main and due(tc.eval_every):
                    eval_report = _evaluate(parts, report, step)
                    meter.restart_clock()
                if due(tc.save_every) or step == tc.steps or stop.requested:
                    _check_finite(parts, step, last_saved)
                    if rt.is_main:
                        last_saved = parts.save(step)
                    meter.restart_clock()
                if stop.requested:
                    interrupted = True
                    break
        finally:
            report.close()
            parts.close()
    return TrainResult(run_dir=parts.run.path, step=step, checkpoint=last_saved, val=val_errors,
                       interrupted=interrupted, stop_signal=stop.signum or signal.SIGINT, eval=eval_report,
                       is_main=rt.is_main)


def _check_finite(parts: RunParts, step: int, last_saved: Path | None) -> None:
    """Stop the run if the loss went NaN/inf since the last check (the device flag is read here only)."""
    if int(parts.train_step.nonfinite.item()):
        where = f"{last_saved} is the last good checkpoint" if last_saved else "no checkpoint was saved"
        raise TrainingDiverged(
            f"loss became NaN/inf before step {step}; stopped ({where}). "
            f"Try a lower train.lr, train.grad_clip > 0, or train.precision=fp32"
        )


def _log_training(parts: RunParts, meter: LossMeter, report: TrainProgress, step: int) -> None:
    scalars = meter.flush(parts.cfg.train.batch_size)
    scalars["train/lr"] = parts.opt.scheduler.get_last_lr()[0]
    parts.logger.scalars(step, scalars)
    report.logged(step, scalars)
    if parts.rt.device.type == "cpu":
        release_free_memory()  # see mtm.training.memory: resident memory stays flat
    meter.restart_clock()  # as before the meter: logging and trimming are not training time


def _validate(parts: RunParts, report: TrainProgress, step: int) -> dict:
    stats = parts.data.stats
    baseline_means = {name: torch.as_tensor(stats[name].mean) for name in ("states", "actions")}
    # bc / rcbc scored with the view the run's policy acts with (with or without its past actions).
    errors = prediction_errors(parts.policy_model, parts.val_batches, baseline_means,
                               max_windows=parts.cfg.train.val_windows,
                               action_history=parts.cfg.train.eval_policy.action_history)
    scalars = val_scalars(errors)
    check = critic_check(parts.policy_model, parts.data.val)
    if check is not None:  # whether the critic ranks the held-out data's actions (mtm.evaluation.critic)
        scalars.update({f"val/critic_{key}": check[key] for key in ("r2_v", "action_gain", "adv_corr")})
    parts.logger.scalars(step, scalars)
    report.validated(step, errors)
    return errors


def _evaluate(parts: RunParts, progress: TrainProgress, step: int) -> dict:
    report = _evaluate_in_env(parts.policy_model, parts.metadata, parts.cfg.train, parts.data.eval_env,
                              parts.run.path, step)
    parts.logger.scalars(step, eval_scalars(report))
    progress.evaluated(step, report)
    if report.get("contact_sheet"):
        parts.logger.image("eval/contact_sheet", report["contact_sheet"], step)
    return report

"""`mtm train`: the training loop, single device by default, DDP under torchrun.

    data -> train/val split by episode -> statistics of the train split -> tokenizers -> MTM
    every step (mtm.training.step): sample windows -> draw a mask per sample -> forward -> loss -> AdamW step
    every log_every: train/... scalars; every val_every: val/... prediction errors;
    every eval_every: eval/... returns and normalised score of rollouts in the env (rank 0);
    every save_every and at the end: an atomic checkpoint (rank 0 only)

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

import json
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from mtm.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from mtm.config import RunConfig, config_to_dict, format_config, save_config
from mtm.data.batches import WindowBatches
from mtm.data.formats import detect_format
from mtm.data.identity import dataset_identity
from mtm.data.stats import ModalityStats
from mtm.data.mixture import labelled_first, load_training_data
from mtm.data.returns import typical_best_return
from mtm.data.trajectories import Trajectories
from mtm.data.windows import WindowSampler
from mtm.errors import ConfigError, DataError, MTMError, MTMWarning, OutputError
from mtm.evaluation.predictions import prediction_errors, steps_needed
from mtm.evaluation.rollouts import evaluate_policy
from mtm.hardware import Precision, cpu_kernel_path, resolve_precision, thread_summary
from mtm.io import atomic_write_text, write_failure
from mtm.model.build import build_model, model_from_spec
from mtm.model.masks import MaskMixture
from mtm.model.tokenizers import BinnedTokenizer, ContinuousTokenizer, ImageTokenizer, Tokenizer
from mtm.policy import MTMPolicy, check_target_fraction
from mtm.rollout import PixelSpec, check_env_id
from mtm.training.memory import release_free_memory
from mtm.training.optim import build_optimizer, build_scheduler
from mtm.training.rundir import CONFIG_FILE, METRICS_FILE, RunDirectory
from mtm.training.runtime import Runtime, seed_everything, setup_runtime, teardown_runtime
from mtm.training.ema import WeightAverage
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


def truncate_metrics(path: Path, step: int) -> list[dict]:
    """Keep the rows of metrics.jsonl up to `step`, the checkpoint a run resumes from: the steps
    after it are trained and logged again. A row cut short by a kill goes too. Returns the rows kept."""
    if not path.exists():
        return []
    kept, rows = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line + "\n")
            rows.append(row)
    atomic_write_text(path, "".join(kept))
    return rows


class _Logger:
    """TensorBoard scalars plus metrics.jsonl (machine-readable), rank 0 only. On resume from step
    s, both forget what a killed run logged after s (TensorBoard's purge_step does it for events),
    and `clocks` are the training wall and CPU seconds the run had logged by s."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.writer = None
        self.jsonl = None
        self.clocks = (0.0, 0.0)
        if enabled:
            if resume_step is not None:
                for row in truncate_metrics(run_dir / METRICS_FILE, resume_step):
                    self.clocks = (row.get("charts/train_wall_s", self.clocks[0]),
                                   row.get("charts/train_cpu_s", self.clocks[1]))
            self.writer = SummaryWriter(str(run_dir), purge_step=None if resume_step is None else resume_step + 1)
            self.jsonl = open(run_dir / METRICS_FILE, "a")

    def text(self, tag: str, text: str) -> None:
        if self.writer:
            self.writer.add_text(tag, text)

    def image(self, tag: str, path: str | Path, step: int) -> None:
        """A PNG file as an image in TensorBoard (the contact sheet of an evaluation)."""
        if self.writer:
            with Image.open(path) as picture:
                self.writer.add_image(tag, np.asarray(picture.convert("RGB")), step, dataformats="HWC")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()

    def close(self) -> None:
        if self.writer:
            self.writer.close()
            self.jsonl.close()


def _val_scalars(errors: dict[str, dict]) -> dict[str, float]:
    return {f"val/{task}_{name}": e[name] for task, e in errors.items() for name in ("mse", "baseline_mse", "ratio")}


def _image_keys(cfg: RunConfig, data: Trajectories) -> list[str]:
    """The image observation keys to tokenize; they are read lazily, from a native file only."""
    wanted = data.image_keys if cfg.tokens.image_keys is None else list(cfg.tokens.image_keys)
    unknown = [k for k in wanted if k not in data.image_keys]
    if unknown:
        raise ConfigError(f"tokens.image_keys: {unknown} are not image observations of {cfg.data.path} "
                          f"(it has {data.image_keys or 'none'})")
    clash = [k for k in wanted if k in ("states", "actions", "returns")]
    if clash:
        raise ConfigError(f"image key {clash[0]!r} collides with a modality name; rename it in the data")
    if wanted and detect_format(cfg.data.path) != "native":
        raise ConfigError(f"{cfg.data.path}: image frames are read lazily from mtm's native format; "
                          f"convert it first (mtm convert {cfg.data.path} DST.hdf5)")
    return sorted(wanted)


def _evaluate_in_env(model, metadata: dict, tc, env_id: str, run_dir: Path, step: int) -> dict:
    """Roll the current model out in its env; training's RNG streams and the model's mode are left
    exactly as they were."""
    # The policy acts at the run's own precision unless train.eval_policy.precision says otherwise.
    policy = tc.eval_policy if tc.eval_policy.precision != "auto" else tc.eval_policy.replace(precision=tc.precision)
    rng = capture_rng_state()
    was_training = model.training
    try:
        def factory(slots: int) -> MTMPolicy:
            return MTMPolicy(model, metadata, policy, num_envs=slots, device=next(model.parameters()).device)

        media = None
        if tc.eval_video:
            # The video and, next to it, its contact sheet (also logged to TensorBoard by the caller).
            videos = run_dir / "videos"
            videos.mkdir(parents=True, exist_ok=True)
            media = RolloutMedia(video=videos / f"step_{step:08d}.mp4", contact_sheet=videos / f"step_{step:08d}.png",
                                 quality=tc.eval_video_quality)
        return evaluate_policy(factory, metadata, env_id, episodes=tc.eval_episodes, num_envs=tc.eval_num_envs,
                               seed=tc.eval_seed, media=media,
                               pixels=PixelSpec.from_dict(metadata["data_info"].get("pixels")))
    finally:
        model.train(was_training)
        restore_rng_state(rng)


def _eval_scalars(report: dict) -> dict[str, float]:
    out = {"eval/return_mean": report["return_mean"], "eval/return_std": report["return_std"],
           "eval/env_steps_per_s": report["env_steps_per_s"]}
    if report.get("normalized_score_mean") is not None:
        out["eval/normalized_score"] = report["normalized_score_mean"]
    return out


def _return_summary(data: Trajectories) -> dict:
    """What a policy needs to pick a target return: episode returns and the return-token range,
    over the episodes that have rewards ({} if none has)."""
    if not data.present["rewards"].any():
        return {}
    ep = data.episode_returns()[data.present["rewards"]]
    rtg = data.arrays["returns"][data.rows_with("returns"), 0]
    typical, outliers = typical_best_return(ep)
    return {
        "episode_return": {"min": float(ep.min()), "mean": float(ep.mean()), "max": float(ep.max()),
                           "typical_max": typical, "outliers_above": outliers},
        "rtg_token": {"min": float(rtg.min()), "max": float(rtg.max())},
    }


@dataclass
class _RunData:
    """The dataset as training uses it: split, statistics, window samplers (with image frames)."""

    data: Trajectories
    train: Trajectories
    val: Trajectories
    stats: dict[str, ModalityStats]
    identities: list[dict]  # of every dataset (data.path, then data.extra_paths)
    only_with: list[str]  # data.only_with: the modalities every episode used has
    image_keys: list[str]
    train_sampler: WindowBatches
    val_sampler: WindowBatches | None
    eval_env: str | None


def data_paths(cfg: RunConfig) -> list[str]:
    """Every dataset of a run: data.path, then data.extra_paths."""
    return [cfg.data.path, *cfg.data.extra_paths]


def _check_identities(paths: list[str], identities: list[dict], checkpoint) -> None:
    """A resumed run must read exactly the bytes it was trained on, file by file."""
    meta = checkpoint.metadata
    saved = meta.get("datasets") or [meta.get("dataset", {})]
    if len(saved) != len(identities):
        raise DataError(f"this run was trained on {len(saved)} dataset(s), --resume gives {len(identities)}; "
                        f"resume with the same files")
    for path, identity, before in zip(paths, identities, saved):
        if before.get("sha256") != identity["sha256"]:
            raise DataError(
                f"{path}: dataset content differs from the one this run was trained on "
                f"({before.get('path')}); resume with the same file"
            )


def _load_run_data(cfg: RunConfig, rt: Runtime, checkpoint) -> _RunData:
    """Read, split and window the dataset(s). The split and the statistics come from the data alone
    (seeded), so they are the same on every rank and on resume; the checkpoint's identity check
    catches a changed file."""
    tc = cfg.train
    paths = data_paths(cfg)
    identities = [dataset_identity(p) for p in paths]
    if checkpoint is not None:
        _check_identities(paths, identities, checkpoint)
    loaded = load_training_data(paths, format=cfg.data.format, rtg=cfg.data.rtg, gamma=cfg.data.gamma,
                                rtg_horizon=cfg.data.rtg_horizon, val_fraction=cfg.data.val_fraction,
                                split_seed=cfg.data.split_seed, only_with=cfg.data.only_with)
    data, train_data, val_data = loaded.data, loaded.train, loaded.val
    eval_env = tc.eval_env or data.info.env_id
    if tc.eval_every:
        if not eval_env:
            raise ConfigError("train.eval_every needs an environment: the dataset names none; set train.eval_env")
        check_env_id(eval_env)
    keys = ("states", "actions", "returns") if cfg.tokens.use_returns else ("states", "actions")
    image_keys = _image_keys(cfg, data)
    if image_keys and len(paths) > 1:
        raise ConfigError("image frames are read from a single native file; train a mixture of files on "
                          "their low-dimensional data (tokens.image_keys=[]) or join them into one file")
    stats = train_data.stats()
    _check_modalities(stats, cfg, paths)

    source_index, weights = loaded.source_index, cfg.data.weights or None
    if cfg.data.action_share is not None:  # sources by labels instead of by file
        train_data, source_index = labelled_first(train_data)
        weights = [cfg.data.action_share, 1.0 - cfg.data.action_share]

    def batches(part: Trajectories, weights: list[float] | None = None) -> WindowBatches:
        sampler = WindowSampler(part, cfg.data.window, device=rt.device, keys=keys,
                                source_index=source_index if weights else None, source_weights=weights)
        return WindowBatches.build(sampler, cfg.data.path, image_keys)

    return _RunData(data=data, train=train_data, val=val_data, stats=stats, identities=identities,
                    only_with=list(cfg.data.only_with), image_keys=image_keys, eval_env=eval_env,
                    train_sampler=batches(train_data, weights),
                    val_sampler=batches(val_data) if val_data.num_episodes else None)


def _check_modalities(stats: dict[str, ModalityStats], cfg: RunConfig, paths: list[str]) -> None:
    """Every modality the model tokenizes must appear in some training episode."""
    named = paths[0] if len(paths) == 1 else "the training data"
    if "actions" not in stats:
        raise DataError(f"{named}: no training episode has actions; MTM needs a few labelled episodes "
                        f"(the held-out split may have taken them: lower data.val_fraction)")
    if cfg.tokens.use_returns and "returns" not in stats:
        raise DataError(f"{named}: no training episode has rewards, so there is no return-to-go; "
                        f"train with --set tokens.use_returns=false")


def _no_validation_reason(run: _RunData, model: torch.nn.Module) -> str | None:
    """Why asking for validation (val_fraction > 0, val_every > 0) will produce none, if it will not."""
    if run.val.num_episodes == 0:
        n = run.data.num_episodes
        if run.only_with and n >= 2:
            return f"no held-out episode has {' and '.join(run.only_with)} (data.only_with)"
        return f"the dataset has {n} episode{'' if n == 1 else 's'}, none can be held out"
    needed = steps_needed(model)
    longest = int(run.val.lengths.max())
    if needed is not None and longest < needed:
        return (f"the {run.val.num_episodes} held-out episodes have at most {longest} step{'' if longest == 1 else 's'}, "
                f"and a {model.window}-step window needs {needed} real steps for any prediction to be scored; "
                f"use longer episodes or a shorter data.window")
    return None


def _runtime_info(rt: Runtime, precision: Precision) -> dict:
    """Where and how the run computes: saved in every checkpoint's metadata and shown at start."""
    info = {"device": str(rt.device), "world_size": rt.world_size, "precision": precision.to_dict()}
    if rt.device.type == "cpu":
        info.update(cpu=cpu_kernel_path(), threads=torch.get_num_threads(), threads_summary=thread_summary())
    return info


def _describe_runtime(info: dict) -> str:
    text = f"device {info['device']}, precision {info['precision']['dtype']} ({info['precision']['reason']})"
    if info.get("threads_summary"):
        text += f", {info['threads_summary']}"
    if info["world_size"] > 1:
        text += f", {info['world_size']} processes"
    return text


def _run_metadata(cfg: RunConfig, run: _RunData, model: torch.nn.Module) -> dict:
    """What a checkpoint carries besides weights: everything a policy or `mtm eval` needs to use
    the model without the dataset (statistics, return range, spaces, keys, the model's spec)."""
    info = run.data.info
    return {
        "env_id": info.env_id,
        "dataset": run.identities[0],
        **({"datasets": run.identities} if len(run.identities) > 1 else {}),
        "data_info": {
            "source_format": info.source_format, "source": info.source,
            "ref_min_score": info.ref_min_score, "ref_max_score": info.ref_max_score,
            "observation_space": info.observation_space, "action_space": info.action_space,
            "pixels": info.extra.get("pixels"),  # how `mtm collect` rendered frames, if it did
        },
        "state_keys": run.data.state_keys,
        "image_keys": run.image_keys,
        "rtg": run.data.rtg,
        "stats": {k: v.to_dict() for k, v in run.stats.items()},
        "returns": _return_summary(run.train),
        "split": {"val_fraction": cfg.data.val_fraction, "seed": cfg.data.split_seed,
                  "train_episodes": run.train.num_episodes, "val_episodes": run.val.num_episodes,
                  **({} if run.data.complete else {
                      "train_episodes_with": {m: int(f.sum()) for m, f in run.train.present.items()},
                      "val_episodes_with": {m: int(f.sum()) for m, f in run.val.present.items()}})},
        "model": model.spec(),
    }


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


class _LossMeter:
    """Running sums of the loss and its parts between two log steps, kept on the device (no
    per-step sync), and the clocks of training steps only: validation, evaluation, saving and
    logging are left out. flush() gives train/... scalars, charts/samples_per_s, and the run's
    cumulative charts/train_wall_s and charts/train_cpu_s (CPU = user + system of every thread:
    the x axis of learning curves, carried over a resume)."""

    def __init__(self, parts: tuple[str, ...], device: torch.device, clocks: tuple[float, float] = (0.0, 0.0)) -> None:
        self.loss = torch.zeros((), device=device)
        self.parts = {name: torch.zeros((), device=device) for name in parts}
        self.grad_norm = torch.zeros((), device=device)
        self.steps = 0
        self.total_wall, self.total_cpu = clocks
        self.window_wall = 0.0
        self.start = self.last = _clocks()

    def restart_clock(self) -> None:
        """Training steps start again: the time since the last step (other work) is not counted."""
        self._bank()
        self.start = self.last = _clocks()

    def _bank(self) -> None:
        wall, cpu = self.last[0] - self.start[0], self.last[1] - self.start[1]
        self.window_wall += wall
        self.total_wall += wall
        self.total_cpu += cpu
        self.start = self.last

    def add(self, loss: torch.Tensor, parts: dict[str, torch.Tensor], grad_norm: torch.Tensor) -> None:
        self.loss += loss.detach()
        for name, part in parts.items():
            self.parts[name] += part.detach()
        self.grad_norm = grad_norm
        self.steps += 1
        self.last = _clocks()

    def flush(self, batch_size: int) -> dict[str, float]:
        """Means since the last flush, then reset."""
        n = max(self.steps, 1)
        scalars = {
            "train/loss": float(self.loss) / n,  # syncs the device, so the clocks below include the work
            **{f"train/loss_{name}": float(total) / n for name, total in self.parts.items()},
            "train/grad_norm": float(self.grad_norm),
        }
        self.last = _clocks()
        self._bank()
        scalars["charts/samples_per_s"] = self.steps * batch_size / max(self.window_wall, 1e-9)
        scalars["charts/train_wall_s"] = self.total_wall
        scalars["charts/train_cpu_s"] = self.total_cpu
        self.loss.zero_()
        for total in self.parts.values():
            total.zero_()
        self.steps = 0
        self.window_wall = 0.0
        return scalars


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


# ---------------------------------------------------------------------------------------------
# The loop


def train(cfg: RunConfig, *, resume: str | Path | None = None, overwrite: bool = False,
          progress: bool = True, say: Callable[[str], None] | None = print) -> TrainResult:
    """Train (or continue) a run. `resume`: a run directory whose `last` checkpoint to continue.
    `say` prints the one line on device, precision and threads at start (rank 0; None: quiet)."""
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

    run_data = _load_run_data(cfg, rt, checkpoint)
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
        reason = _no_validation_reason(run_data, model)
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
    runtime = _runtime_info(rt, precision)
    if rt.is_main and say is not None:
        say(_describe_runtime(runtime))

    metadata = {**_run_metadata(cfg, run_data, model), "runtime": runtime}
    if checkpoint is None:
        run.begin(overwrite)  # everything is validated: from here on the run writes
    logger = _Logger(run_dir, enabled=rt.is_main, resume_step=start_step if checkpoint else None)
    if rt.is_main:
        save_config(cfg, run_dir / CONFIG_FILE)
        if checkpoint is None:
            logger.text("hparams", "```\n" + format_config(cfg) + "\n```")
            logger.text("runtime", _describe_runtime(runtime))
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
    meter = _LossMeter(model.outputs, rt.device, logger.clocks)
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

    bar = tqdm(total=tc.steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
               disable=not (progress and rt.is_main))

    model.train()
    step = start_step
    with _StopRequest() as stop:
        try:
            while step < tc.steps:
                loss, parts, grad_norm = train_step(step)
                step += 1
                meter.add(loss, parts, grad_norm)
                bar.update(1)

                if step % tc.log_every == 0 or step == tc.steps:
                    check_finite(step)
                    scalars = meter.flush(tc.batch_size)
                    scalars["train/lr"] = scheduler.get_last_lr()[0]
                    logger.scalars(step, scalars)
                    bar.set_postfix(loss=f"{scalars['train/loss']:.4f}",
                                    samples_s=f"{scalars['charts/samples_per_s']:.0f}")
                    if rt.device.type == "cpu":
                        release_free_memory()  # see mtm.training.memory: resident memory stays flat
                    meter.restart_clock()  # as before the meter: logging and trimming are not training time

                if rt.is_main and val_sampler is not None and tc.val_every and (
                    step % tc.val_every == 0 or step == tc.steps
                ):
                    val_errors = prediction_errors(policy_model, val_sampler, baseline_means, max_windows=tc.val_windows)
                    logger.scalars(step, _val_scalars(val_errors))
                    meter.restart_clock()  # validation time is not training throughput

                if rt.is_main and tc.eval_every and (step % tc.eval_every == 0 or step == tc.steps):
                    eval_report = _evaluate_in_env(policy_model, metadata, tc, run_data.eval_env, run_dir, step)
                    logger.scalars(step, _eval_scalars(eval_report))
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
            bar.close()
            logger.close()
            for batches in (train_sampler, val_sampler):
                if batches is not None:
                    batches.close()
    return TrainResult(run_dir=run_dir, step=step, checkpoint=last_saved, val=val_errors,
                       interrupted=interrupted, eval=eval_report, is_main=rt.is_main)


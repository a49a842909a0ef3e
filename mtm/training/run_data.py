"""The dataset(s) of a run as training uses them: read, checked, split, windowed.

`load_run_data` reads data.path and data.extra_paths, checks that a resumed run reads exactly the
bytes it was trained on, and gives the train/validation split, the statistics of the train split
and a window sampler for each part (with image frames, read lazily from the same source, as the
format data.format names or the file's layout shows).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from mtm.config import RunConfig
from mtm.data.batches import WindowBatches
from mtm.data.formats import DataSource, resolve_path
from mtm.data.identity import dataset_identity
from mtm.data.mixture import labelled_first, load_training_data
from mtm.data.stats import ModalityStats
from mtm.data.trajectories import Trajectories
from mtm.data.windows import WindowSampler
from mtm.errors import ConfigError, DataError
from mtm.evaluation.predictions import steps_needed
from mtm.model.iql import IQL_KIND, TRANSITION_KEYS
from mtm.rollout import check_env_id
from mtm.training.runtime import Runtime


@dataclass
class RunData:
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


def same_file_pair(paths: list[str]) -> tuple[int, int] | None:
    """Indices (i, j), i < j, of the first two paths that name one file (through links, `..` or a
    hard link too), or None. A file given twice would count its episodes twice, and held-out
    episodes of one copy could be trained on in the other."""
    def resolved(path: str) -> str:
        try:  # a Minari dataset id names the folder it resolves to
            return str(resolve_path(path))
        except DataError:  # reported when it is read
            return path

    paths = [resolved(p) for p in paths]

    def same(a: str, b: str) -> bool:
        try:
            return os.path.samefile(a, b)
        except OSError:  # a missing file is reported when it is read
            return os.path.realpath(a) == os.path.realpath(b)

    for j in range(1, len(paths)):
        for i in range(j):
            if same(paths[i], paths[j]):
                return i, j
    return None


def _check_identities(paths: list[str], identities: list[dict], checkpoint) -> None:
    """A resumed run must read exactly the bytes it was trained on, file by file."""
    saved = checkpoint.run_metadata.datasets
    if len(saved) != len(identities):
        raise DataError(f"this run was trained on {len(saved)} dataset(s), --resume gives {len(identities)}; "
                        f"resume with the same files")
    for path, identity, before in zip(paths, identities, saved):
        if before.get("sha256") != identity["sha256"]:
            raise DataError(
                f"{path}: dataset content differs from the one this run was trained on "
                f"({before.get('path')}); resume with the same file"
            )


# The data settings a resumed run must keep: they decide the split (held-out episodes would train),
# the return tokens and the windows, all of which the model's weights and statistics were made on.
FIXED_ON_RESUME = ("window", "rtg", "gamma", "rtg_horizon", "val_fraction", "split_seed", "only_with")


def _check_data_settings(cfg: RunConfig, checkpoint) -> None:
    before = (checkpoint.config or {}).get("data", {})

    def plain(value):  # a list from the config file, a tuple or list from the dataclass
        return list(value) if isinstance(value, (list, tuple)) else value

    for key in FIXED_ON_RESUME:
        now = getattr(cfg.data, key)
        was = before.get(key, now)
        if plain(was) != plain(now):
            raise ConfigError(f"data.{key} cannot change on --resume (the run was trained with {was!r}, now {now!r}); "
                              f"start a new run to train with it")


def load_run_data(cfg: RunConfig, rt: Runtime, checkpoint) -> RunData:
    """Read, split and window the dataset(s). The split and the statistics come from the data alone
    (seeded), so they are the same on every rank and on resume; the checkpoint's identity check
    catches a changed file."""
    tc = cfg.train
    paths = data_paths(cfg)
    twice = same_file_pair(paths)
    if twice is not None:
        names = ["data.path"] + [f"data.extra_paths[{k}]" for k in range(len(paths) - 1)]
        i, j = twice
        raise ConfigError(f"{names[i]} ({paths[i]}) and {names[j]} ({paths[j]}) are the same file; give each "
                          f"dataset once (its episodes would count twice)")
    identities = [dataset_identity(resolve_path(p)) for p in paths]  # a Minari id: its folder
    if checkpoint is not None:
        _check_data_settings(cfg, checkpoint)
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
    transitions = cfg.model.kind == IQL_KIND  # (s, a, r, s', done) from two-step windows at every step
    if transitions:
        keys = TRANSITION_KEYS
    else:
        keys = ("states", "actions", "returns") if cfg.tokens.use_returns else ("states", "actions")
        if getattr(cfg.model, "reward_head", False) or cfg.model.critic:  # targets: the per-step rewards, not a token
            keys += ("rewards",)
        if cfg.model.critic:  # a fall ends the TD target there
            keys += ("terminals",)
    image_keys = _image_keys(cfg, data, loaded.sources[0])
    if image_keys and len(paths) > 1:
        raise ConfigError("image frames are read from a single file; train a mixture of files on "
                          "their low-dimensional data (tokens.image_keys=[]) or join them into one file")
    stats = train_data.stats()
    _check_modalities(stats, cfg, paths)

    source_index, weights = loaded.source_index, cfg.data.weights or None
    if cfg.data.action_share is not None:  # sources by labels instead of by file
        train_data, source_index = labelled_first(train_data)
        weights = [cfg.data.action_share, 1.0 - cfg.data.action_share]

    def batches(part: Trajectories, weights: list[float] | None = None) -> WindowBatches:
        sampler = WindowSampler(part, cfg.data.window, device=rt.device, keys=keys,
                                source_index=source_index if weights else None, source_weights=weights,
                                every_step=transitions)
        return WindowBatches.build(sampler, loaded.sources[0], image_keys, cfg.data.frames)

    return RunData(data=data, train=train_data, val=val_data, stats=stats, identities=identities,
                    only_with=list(cfg.data.only_with), image_keys=image_keys, eval_env=eval_env,
                    train_sampler=batches(train_data, weights),
                    val_sampler=batches(val_data) if val_data.num_episodes else None)


def _check_modalities(stats: dict[str, ModalityStats], cfg: RunConfig, paths: list[str]) -> None:
    """Every modality the model tokenizes must appear in some training episode."""
    named = paths[0] if len(paths) == 1 else "the training data"
    if "actions" not in stats:
        raise DataError(f"{named}: no training episode has actions; MTM needs a few labelled episodes "
                        f"(the held-out split may have taken them: lower data.val_fraction)")
    if cfg.model.kind == IQL_KIND and "rewards" not in stats:
        raise DataError(f"{named}: no training episode has rewards; model.kind={IQL_KIND} (IQL) learns a value "
                        f"from them")
    if cfg.tokens.use_returns and "returns" not in stats:
        raise DataError(f"{named}: no training episode has rewards, so there is no return-to-go; "
                        f"train with --set tokens.use_returns=false")


def no_validation_reason(run: RunData, model: torch.nn.Module) -> str | None:
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


def _image_keys(cfg: RunConfig, data: Trajectories, source: DataSource) -> list[str]:
    """The image observation keys to tokenize; they are read lazily, by a reader that can
    (a `mtm.data.episode.FrameReader`: the native one)."""
    wanted = data.image_keys if cfg.tokens.image_keys is None else list(cfg.tokens.image_keys)
    unknown = [k for k in wanted if k not in data.image_keys]
    if unknown:
        raise ConfigError(f"tokens.image_keys: {unknown} are not image observations of {cfg.data.path} "
                          f"(it has {data.image_keys or 'none'})")
    clash = [k for k in wanted if k in ("states", "actions", "returns")]
    if clash:
        raise ConfigError(f"image key {clash[0]!r} collides with a modality name; rename it in the data")
    if wanted and not source.reads_frames:
        raise ConfigError(f"{cfg.data.path}: image frames are read lazily, which the {source.format} reader "
                          f"cannot do; convert it to mtm's native format first (mtm convert {cfg.data.path} DST.hdf5)")
    return sorted(wanted)

"""The training view of a dataset: every episode's low-dimensional data in contiguous arrays.

Episodes lie back to back with T rows each (the final observation is not part of them) and no
padding: `WindowSampler` pads windows when it samples them. A modality an episode lacks is zeros
in the arrays and False in ``present`` ("returns" follows "rewards"); statistics come from the
episodes that have it. Values stay in raw units: the tokenizers normalise, with `stats()` of the
training split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from mtm.data.episode import OPTIONAL_MODALITIES, STATE_KEY, DatasetInfo, EpisodeSource, FlatReader, is_image
from mtm.data.formats import DataSource, open_dataset
from mtm.data.returns import check_rtg_options, episodes_returns_to_go
from mtm.data.stats import ModalityStats
from mtm.errors import ConfigError, DataError

#: The modalities `stats()` describes (timesteps are indices, not something to normalise).
STAT_KEYS = ("states", "actions", "returns", "rewards")
#: Array keys an episode may lack, and the episode modality whose presence each follows.
PRESENCE_OF = {"actions": "actions", "rewards": "rewards", "returns": "rewards"}


@dataclass
class Trajectories:
    """Every episode's low-dimensional modalities; episode i is rows ``starts[i] : starts[i] + lengths[i]``.

    ``arrays``: "states" (N, S) float32 (the keys ``state_keys`` concatenated in that sorted order),
    "actions" (N, A), "rewards" and "returns" (N, 1) float32 (return-to-go as ``rtg`` says),
    "terminals" (N, 1) float32, 1 on the last step of an episode that ended by termination (a fall:
    no state follows it; timeouts and cut-short episodes are 0 throughout), and "timesteps" (N,)
    int64, the step within its episode. ``episode_ids`` (E,): each episode's index in
    the source, so a split can be named and reproduced. ``image_keys``: the observation keys holding
    images, whose frames stay in the file (`mtm.data.image_windows.ImageWindows` reads them per batch).
    """

    arrays: dict[str, np.ndarray]
    starts: np.ndarray
    lengths: np.ndarray
    info: DatasetInfo
    state_keys: list[str]
    rtg: dict[str, Any]
    episode_ids: np.ndarray | None = None  # None means 0 … E−1; always an array after __init__
    image_keys: list[str] = field(default_factory=list)
    # {"actions": (E,) bool, "rewards": (E,) bool}: which episodes carry the modality (None: all).
    present: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.starts = np.asarray(self.starts, dtype=np.int64)
        self.lengths = np.asarray(self.lengths, dtype=np.int64)
        if self.episode_ids is None:
            self.episode_ids = np.arange(self.lengths.shape[0], dtype=np.int64)
        self.episode_ids = np.asarray(self.episode_ids, dtype=np.int64)
        expected_starts = np.cumsum(self.lengths) - self.lengths
        if not np.array_equal(self.starts, expected_starts) or self.episode_ids.shape != self.lengths.shape:
            raise ValueError("starts, lengths and episode_ids do not describe back-to-back episodes")
        e = self.lengths.shape[0]
        given = self.present or {}
        unknown = set(given) - set(OPTIONAL_MODALITIES)
        if unknown:
            raise ValueError(f"present names {sorted(unknown)}; only {OPTIONAL_MODALITIES} can be absent")
        self.present = {m: np.asarray(given[m], dtype=bool).reshape(-1) if m in given else np.ones(e, bool)
                        for m in OPTIONAL_MODALITIES}
        if any(flags.shape != (e,) for flags in self.present.values()):
            raise ValueError("present flags need one entry per episode")
        n = int(self.lengths.sum())
        for key, arr in self.arrays.items():
            if arr.shape[0] != n:
                raise ValueError(f"array {key!r} has {arr.shape[0]} rows, the episodes have {n} steps")

    @property
    def num_episodes(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def num_steps(self) -> int:
        return int(self.arrays["actions"].shape[0])

    @property
    def state_dim(self) -> int:
        return int(self.arrays["states"].shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.arrays["actions"].shape[1])

    @property
    def complete(self) -> bool:
        """Every episode has actions and rewards: the common case, in which the statistics use every
        row and a checkpoint's split needs no per-modality episode counts."""
        return all(flags.all() for flags in self.present.values())

    def has(self, key: str) -> np.ndarray:
        """(E,) bool: the episodes that carry array `key` (all True for states and timesteps)."""
        modality = PRESENCE_OF.get(key)
        return self.present[modality] if modality else np.ones(self.num_episodes, bool)

    def rows_with(self, key: str) -> np.ndarray:
        """(N,) bool: the steps whose episode carries array `key`."""
        return np.repeat(self.has(key), self.lengths)

    def episode_returns(self) -> np.ndarray:
        """(E,) float64 undiscounted return of every episode (NaN for one without rewards)."""
        if self.num_episodes == 0:
            return np.zeros(0, np.float64)
        returns = np.add.reduceat(self.arrays["rewards"][:, 0].astype(np.float64), self.starts)
        return np.where(self.present["rewards"], returns, np.nan)

    def only_with(self, keys: Sequence[str]) -> "Trajectories":
        """The episodes that carry every modality in `keys` ("actions", "rewards")."""
        unknown = [k for k in keys if k not in OPTIONAL_MODALITIES]
        if unknown:
            raise ConfigError(f"only episodes with {unknown}? choose among {', '.join(OPTIONAL_MODALITIES)}")
        keep = np.ones(self.num_episodes, bool)
        for key in keys:
            keep &= self.present[key]
        return self if keep.all() else self.select(np.flatnonzero(keep))

    def select(self, episode_indices: Sequence[int] | np.ndarray) -> "Trajectories":
        """A new contiguous copy holding only the given episodes (indices into this object), in that order."""
        idx = np.asarray(episode_indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -self.num_episodes or idx.max() >= self.num_episodes):
            raise IndexError(f"episode index out of range for {self.num_episodes} episodes")
        lengths = self.lengths[idx]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if idx.size else lengths
        # Row r of the copy comes from old row r + (old start − new start) of its episode.
        rows = np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(self.starts[idx] - starts, lengths)
        return Trajectories(
            arrays={key: arr[rows] for key, arr in self.arrays.items()}, starts=starts, lengths=lengths,
            info=self.info, state_keys=list(self.state_keys), rtg=dict(self.rtg),
            episode_ids=self.episode_ids[idx], image_keys=list(self.image_keys),
            present={m: flags[idx] for m, flags in self.present.items()},
        )

    def split(self, val_fraction: float, seed: int) -> tuple["Trajectories", "Trajectories"]:
        """(train, val), split by whole episodes, each in the dataset's order.

        Validation is the first round(val_fraction · E) of ``numpy.random.default_rng(seed)``'s
        permutation (at least one when val_fraction > 0 and E ≥ 2; training keeps at least one), so
        the split depends only on (E, val_fraction, seed). Shuffling matters: taking the last
        episodes (as the official MTM code does) would hide the newest, usually best, behaviour.
        """
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"validation fraction must lie in [0, 1), got {val_fraction}")
        e = self.num_episodes
        n_val = int(round(val_fraction * e))
        if val_fraction > 0 and e >= 2:
            n_val = min(max(n_val, 1), e - 1)
        elif e < 2:
            n_val = 0
        order = np.random.default_rng(seed).permutation(e)
        return self.select(np.sort(order[n_val:])), self.select(np.sort(order[:n_val]))

    def stats(self) -> dict[str, ModalityStats]:
        """Raw statistics of states, actions, returns and rewards over the steps of the episodes
        that carry each; a modality no episode carries has no entry."""
        if self.num_steps == 0:
            raise DataError("cannot compute normalisation statistics: the dataset has no steps")
        out = {}
        for key in STAT_KEYS:
            if self.complete or self.has(key).all():
                out[key] = ModalityStats.of(self.arrays[key])
            elif self.has(key).any():
                out[key] = ModalityStats.of(self.arrays[key][self.rows_with(key)])
        return out


def load_trajectories(source: EpisodeSource | DataSource | str | os.PathLike, *, format: str | None = None,
                      rtg: str = "average", gamma: float = 0.99, rtg_horizon: int = 1000,
                      rtg_include_current_reward: bool = True,
                      state_keys: list[str] | None = None) -> Trajectories:
    """Read a dataset (an open `EpisodeSource`, left open, a `DataSource`, or a path to open with
    `open_dataset`: `format` applies to a path alone) into `Trajectories`. ``rtg*`` choose the return-to-go (`mtm.data.returns`); ``state_keys`` picks
    low-dimensional observation keys (default: all), concatenated in sorted order. Sources with
    ``flat_arrays()`` (D4RL) are read without splitting them into episodes."""
    check_rtg_options(rtg, gamma, rtg_horizon)
    if state_keys is not None and len(state_keys) == 0:
        raise ConfigError("state_keys is empty; name at least one observation key or leave it unset")
    if isinstance(source, (str, os.PathLike, DataSource)):
        with (source.open() if isinstance(source, DataSource) else open_dataset(source, format)) as opened:
            return load_trajectories(opened, rtg=rtg, gamma=gamma, rtg_horizon=rtg_horizon,
                                     rtg_include_current_reward=rtg_include_current_reward,
                                     state_keys=state_keys)

    where = _where(source)
    if isinstance(source, FlatReader):
        flat = source.flat_arrays()
        observations = {STATE_KEY: flat.observations}
        keys = _choose_state_keys(observations, state_keys, where)
        actions, rewards, lengths = flat.actions, flat.rewards, flat.lengths
        terminated = flat.ends_terminal
        image_keys: list[str] = []
        e, n_rows = lengths.shape[0], int(lengths.sum())
        # A state-only or reward-free D4RL file: no episode has them (zeros, flagged absent).
        present = {"actions": np.full(e, actions is not None), "rewards": np.full(e, rewards is not None)}
        if actions is None:
            actions = np.zeros((n_rows,) + _space_shape(source.info.action_space), np.float32)
        if rewards is None:
            rewards = np.zeros(n_rows, np.float32)
    else:
        keys, image_keys, observations, actions, rewards, lengths, present, terminated = _read_episodes(
            source, state_keys)
    n = int(lengths.sum())
    if n == 0:
        raise DataError(f"{where}: the dataset holds no steps")
    # One copy, cast on the way: float32 rows that never alias the source's arrays.
    states = np.concatenate([observations[k].reshape(n, -1) for k in keys], axis=1, dtype=np.float32)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    rewards = np.asarray(rewards, dtype=np.float32).reshape(n)
    # The episode's end flag on its last row (what a value target needs: no bootstrap after a fall).
    terminals = np.zeros((n, 1), np.float32)
    terminals[starts + np.asarray(lengths, np.int64) - 1, 0] = np.asarray(terminated, bool)
    returns = episodes_returns_to_go(rewards, lengths, rtg, gamma=gamma, horizon=rtg_horizon,
                                     include_current_reward=rtg_include_current_reward)
    arrays = {
        "states": states,
        "actions": np.array(actions, dtype=np.float32).reshape(n, -1),
        "rewards": rewards[:, None].copy(),  # a copy: never alias the source's (D4RLSource shares its cache)
        "returns": returns[:, None],
        "terminals": terminals,
        "timesteps": np.arange(n, dtype=np.int64) - np.repeat(starts, lengths),
    }
    rtg_options = {"kind": rtg, "gamma": float(gamma), "horizon": int(rtg_horizon),
                   "include_current_reward": bool(rtg_include_current_reward)}
    return Trajectories(arrays=arrays, starts=starts, lengths=np.asarray(lengths, dtype=np.int64),
                        info=source.info, state_keys=keys, rtg=rtg_options, image_keys=image_keys,
                        present=present)


def _where(source: EpisodeSource) -> str:
    """How to name a source in a message: the path the user gave (a converted file's info.source is
    where its data came from, somewhere else)."""
    path = getattr(source, "path", None)
    return str(path) if path is not None else source.info.source


def _read_episodes(
    source: EpisodeSource, requested: list[str] | None
) -> tuple[list[str], list[str], dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray],
           np.ndarray]:
    """The chosen state keys, the image keys, every episode's step-aligned arrays (T rows each),
    joined, and whether each episode ended by termination.
    Only the first episode is read whole (its data tells images from low-dimensional arrays); the
    others are asked for the chosen keys alone, so their image frames are never read."""
    where = _where(source)
    if len(source) == 0:
        raise DataError(f"{where}: the dataset holds no episodes")
    first = source.episode(0)
    keys = _choose_state_keys(first.observations, requested, where)
    image_keys = sorted(k for k, v in first.observations.items() if is_image(v))
    obs_parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    actions: list[np.ndarray | None] = []
    rewards: list[np.ndarray | None] = []
    lengths, terminated = [], []
    for i in range(len(source)):
        episode = first if i == 0 else source.episode(i, keys=keys)
        step_obs = episode.step_observations()
        missing = [k for k in keys if k not in step_obs]
        if missing:
            raise DataError(f"{where}: episode {i} lacks observation key(s) {', '.join(missing)}, "
                            f"which episode 0 has")
        for k in keys:
            obs_parts[k].append(step_obs[k])
        actions.append(episode.actions)
        rewards.append(episode.rewards)
        lengths.append(episode.length)
        terminated.append(episode.terminated)
    observations = {k: np.concatenate(parts) for k, parts in obs_parts.items()}
    present = {"actions": np.array([a is not None for a in actions]),
               "rewards": np.array([r is not None for r in rewards])}
    # What an episode lacks is zeros here (and False in `present`): one array shape for all.
    labelled = next((a for a in actions if a is not None), None)
    action_shape = labelled.shape[1:] if labelled is not None else _space_shape(source.info.action_space)
    actions = [a if a is not None else np.zeros((t,) + action_shape, np.float32) for a, t in zip(actions, lengths)]
    rewards = [r if r is not None else np.zeros(t, np.float32) for r, t in zip(rewards, lengths)]
    return (keys, image_keys, observations, np.concatenate(actions), np.concatenate(rewards),
            np.asarray(lengths, np.int64), present, np.asarray(terminated, bool))


def _space_shape(space: dict | None) -> tuple[int, ...]:
    """The per-step shape of a Box description (mtm.data.spaces), or (0,) when unknown: a file of
    state-only episodes may not say what its actions would have been."""
    shape = (space or {}).get("shape")
    return tuple(int(d) for d in shape) if shape else (0,)


def _choose_state_keys(observations: dict[str, np.ndarray], requested: list[str] | None,
                       where: str) -> list[str]:
    low_dim = sorted(k for k, v in observations.items() if not is_image(v))
    if not low_dim:
        raise DataError(f"{where}: no low-dimensional observation key (found only images: "
                        f"{', '.join(sorted(observations))}); MTM's state token needs one")
    if requested is None:
        return low_dim
    missing = [k for k in requested if k not in low_dim]
    if missing:
        raise DataError(f"{where}: observation key(s) {', '.join(missing)} not found among the "
                        f"low-dimensional keys {', '.join(low_dim)}")
    return sorted(set(requested))


"""D4RL's flat transition files (all episodes concatenated row by row): the reader.

docs/data_format.md ("D4RL") maps the layout onto `Episode`. An episode ends at a row where
``terminals | timeouts``; rows after the last such row form a trailing partial episode, kept with
every done flag False. The final observation comes from ``next_observations`` only, never from
``observations`` past the episode's end, which would leak the next episode's reset state into this
one. The whole file is read and validated when the source is opened; ``episode(i)`` hands out slices
and ``flat_arrays()`` the concatenated arrays, so training need not split and re-join episodes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

import warnings

import h5py
import numpy as np

from envs.references import reference_entry
from mtm.data.episode import STATE_KEY, DatasetInfo, Episode, EpisodeSource, select_keys
from mtm.data.hdf5 import open_hdf5, read_array
from mtm.errors import DataError, MTMWarning

REQUIRED_KEYS = ("observations", "terminals")
# A flat file has no episodes of its own to leave them out of: without these, no episode has them.
OPTIONAL_KEYS = ("actions", "rewards", "timeouts", "next_observations")


def is_d4rl(f: h5py.File) -> bool:
    # Either key is enough: no other format has top-level datasets of these names, and calling a
    # file with only one of them D4RL lets the reader say exactly which key is missing.
    return any(isinstance(f.get(k), h5py.Dataset) for k in ("observations", "actions"))


@dataclass(frozen=True)
class FlatArrays:
    """A D4RL file's transitions as loaded (float32, flags as bool); episode i covers rows
    ``starts[i] : starts[i] + lengths[i]``. Both ``ends_*`` False: the trailing partial episode."""

    observations: np.ndarray
    next_observations: np.ndarray | None
    actions: np.ndarray | None  # None: a state-only file
    rewards: np.ndarray | None  # None: a reward-free file
    terminals: np.ndarray
    timeouts: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray

    @property
    def ends_terminal(self) -> np.ndarray:
        return self.terminals[self.starts + self.lengths - 1]

    @property
    def ends_timeout(self) -> np.ndarray:
        return self.timeouts[self.starts + self.lengths - 1]

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every episode, summed in float64 (empty for a reward-free file)."""
        if self.rewards is None:
            return np.zeros(0, np.float64)
        return np.add.reduceat(self.rewards.astype(np.float64), self.starts)


def episode_bounds(done: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start row and length of every episode, given a per-row "episode ends here" flag."""
    n = done.shape[0]
    ends = np.flatnonzero(done) + 1  # exclusive end of each finished episode
    if ends.size == 0 or ends[-1] != n:
        ends = np.append(ends, n)  # trailing partial episode
    starts = np.concatenate([[0], ends[:-1]])
    return starts.astype(np.int64), (ends - starts).astype(np.int64)


def unbounded_box(shape: tuple[int, ...], dtype: np.dtype) -> dict[str, Any]:
    """A Box description (mtm.data.spaces format) for data whose bounds the file does not record."""
    size = int(np.prod(shape)) if shape else 1
    return {"type": "Box", "shape": list(shape), "dtype": str(np.dtype(dtype)),
            "low": ["-inf"] * size, "high": ["inf"] * size}


class D4RLSource(EpisodeSource):
    """Read a D4RL-layout file. Everything is loaded and checked in the constructor."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).resolve()
        with open_hdf5(path) as f:
            self._flat = _load(f, str(self.path))
            metadata = _read_metadata(f)
            info_keys = sorted(f["infos"].keys()) if isinstance(f.get("infos"), h5py.Group) else []
        self.info = _dataset_info(self.path, self._flat, metadata, info_keys)

    def __len__(self) -> int:
        return int(self._flat.starts.shape[0])

    def flat_arrays(self) -> FlatArrays:
        """The whole file as concatenated arrays (shared and read-only: copy before changing)."""
        return self._flat

    def episode(self, index: int, keys: Collection[str] | None = None) -> Episode:
        """Episode `index`; its arrays are read-only views of `flat_arrays()` (no copy)."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        select_keys([STATE_KEY], keys, str(self.path))
        flat = self._flat
        start, stop = int(flat.starts[index]), int(flat.starts[index] + flat.lengths[index])
        obs = flat.observations[start:stop]
        if flat.next_observations is not None:
            obs = np.concatenate([obs, flat.next_observations[stop - 1 : stop]])
        return Episode(
            observations={STATE_KEY: obs},
            actions=None if flat.actions is None else flat.actions[start:stop],
            rewards=None if flat.rewards is None else flat.rewards[start:stop],
            terminations=flat.terminals[start:stop],
            truncations=flat.timeouts[start:stop],
            source_id=f"steps {start}:{stop}",
        )


def _load(f: h5py.File, where: str) -> FlatArrays:
    missing = [k for k in REQUIRED_KEYS if k not in f]
    if missing:
        raise DataError(f"{where}: missing D4RL dataset(s) {', '.join(missing)}; a D4RL file needs "
                        f"{' and '.join(REQUIRED_KEYS)} ({', '.join(OPTIONAL_KEYS)} optional)")
    arrays = {k: read_array(f, k, where) for k in REQUIRED_KEYS + OPTIONAL_KEYS if k in f}
    n = arrays["observations"].shape[0] if arrays["observations"].ndim else 0
    if n == 0:
        raise DataError(f"{where}: the file holds no transitions (observations has 0 rows)")
    for k in ("observations", "actions"):
        if k in arrays and arrays[k].ndim < 2:
            raise DataError(f"{where}: '{k}' has shape {arrays[k].shape}; expected (N, dim)")
    for k in ("rewards", "terminals", "timeouts"):
        if k in arrays:
            arrays[k] = _per_step_scalar(arrays[k], k, where)
    for k, arr in arrays.items():
        rows = arr.shape[0] if arr.ndim else 0
        if rows != n:
            raise DataError(f"{where}: '{k}' has {rows} rows but 'observations' has {n}; "
                            f"every D4RL array needs one row per transition")
    if "next_observations" in arrays and arrays["next_observations"].shape != arrays["observations"].shape:
        raise DataError(f"{where}: 'next_observations' has shape {arrays['next_observations'].shape}, "
                        f"'observations' has {arrays['observations'].shape}; they must match")
    for k in ("observations", "next_observations", "actions", "rewards"):
        if k in arrays:
            arrays[k] = _as_float32(arrays[k], k, where)
    terminals = _flags(arrays["terminals"], "terminals", where)
    if "timeouts" in arrays:
        timeouts = _flags(arrays["timeouts"], "timeouts", where)
    else:
        timeouts = np.zeros(n, bool)
        warnings.warn(f"{where}: no 'timeouts', so episodes end only where 'terminals' is set; an episode the "
                      f"time limit cut runs on into the next one (windows and returns-to-go cross the reset). "
                      f"Add a 'timeouts' array (newer D4RL files have one) if the data has such episodes",
                      MTMWarning, stacklevel=3)
    starts, lengths = episode_bounds(terminals | timeouts)
    flat = FlatArrays(observations=arrays["observations"], next_observations=arrays.get("next_observations"),
                      actions=arrays.get("actions"), rewards=arrays.get("rewards"), terminals=terminals,
                      timeouts=timeouts, starts=starts, lengths=lengths)
    # Episodes are views into these arrays: freezing them makes an in-place edit by a consumer
    # fail loudly instead of silently changing what every later reader sees.
    for arr in vars(flat).values():
        if arr is not None:
            arr.flags.writeable = False
    return flat


def _per_step_scalar(arr: np.ndarray, name: str, where: str) -> np.ndarray:
    if arr.ndim == 2 and arr.shape[1] == 1:
        return arr[:, 0]  # some D4RL files store rewards as (N, 1)
    if arr.ndim != 1:
        raise DataError(f"{where}: '{name}' has shape {arr.shape}; expected (N,) or (N, 1)")
    return arr


def _flags(arr: np.ndarray, name: str, where: str) -> np.ndarray:
    """Booleans, or numbers that are all 0 or 1; text would turn every non-empty string into True."""
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind in "iuf" and np.isin(arr, (0, 1)).all():
        return arr.astype(bool)
    raise DataError(f"{where}: '{name}' must hold booleans (or 0/1), found dtype {arr.dtype}"
                    + ("" if arr.dtype.kind not in "iuf" else " with other values"))


def _as_float32(arr: np.ndarray, name: str, where: str) -> np.ndarray:
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"{where}: '{name}' has dtype {arr.dtype}; expected numbers")
    arr = arr.astype(np.float32, copy=False)
    finite = np.isfinite(arr)
    if not finite.all():
        bad_row = int(np.argwhere(~finite.reshape(arr.shape[0], -1))[0, 0])
        raise DataError(f"{where}: '{name}' holds NaN or inf (first at row {bad_row})")
    return arr


def _read_metadata(f: h5py.File) -> dict[str, Any]:
    """metadata/* scalars and small arrays as JSON-able values (bytes decoded)."""
    group = f.get("metadata")
    if not isinstance(group, h5py.Group):
        return {}
    small = {key: obj for key, obj in group.items() if isinstance(obj, h5py.Dataset) and obj.size <= 1024}
    return {key: _jsonable(obj[()]) for key, obj in small.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _dataset_info(path: Path, flat: FlatArrays, metadata: dict[str, Any],
                  info_keys: list[str]) -> DatasetInfo:
    env_id = str(metadata["env_id"]) if metadata.get("env_id") else None
    # Original D4RL downloads carry no env id, but their file names are the dataset ids
    # ("hopper_medium_replay-v2.hdf5"), which is enough to find the reference scores.
    reference = reference_entry(env_id) or reference_entry(path.stem)
    ref_min, ref_max, provenance = reference or (None, None, None)
    extra: dict[str, Any] = {"metadata": metadata, "infos": info_keys}
    if reference is not None:
        extra["reference_scores"] = provenance
    actions = None if flat.actions is None else unbounded_box(flat.actions.shape[1:], flat.actions.dtype)
    return DatasetInfo(source_format="d4rl", source=str(path), env_id=env_id, ref_min_score=ref_min,
                       ref_max_score=ref_max, action_space=actions, extra=extra,
                       observation_space=unbounded_box(flat.observations.shape[1:], flat.observations.dtype))

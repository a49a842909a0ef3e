"""The in-memory episode: the one shape every reader produces and every consumer takes.

docs/data_format.md ("The episode") has the conventions: T steps; observations keyed by name (a
plain space under ``STATE_KEY``) with T+1 rows when the final observation is known, else T; actions
or rewards None when the whole episode lacks them; termination, truncation or a partial episode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Iterator, Protocol, runtime_checkable

import numpy as np

from mtm.errors import DataError

STATE_KEY = "state"
#: Modalities an episode may lack (None): training hides and never scores them (mtm.model.masks).
OPTIONAL_MODALITIES = ("actions", "rewards")


@dataclass
class Episode:
    observations: dict[str, np.ndarray]
    actions: np.ndarray | None  # None: the episode was recorded without actions
    rewards: np.ndarray | None  # None: the episode was recorded without rewards
    terminations: np.ndarray
    truncations: np.ndarray
    seed: int | None = None
    # Where the episode came from inside its source file ("episode_3", "demo_7", "steps 0:1000").
    source_id: str | None = None

    @property
    def length(self) -> int:
        source = self.actions if self.actions is not None else self.terminations
        return int(source.shape[0])

    def has(self, modality: str) -> bool:
        """Whether the episode carries `modality` ("actions" or "rewards"; observations always)."""
        return getattr(self, modality) is not None

    @property
    def has_final_observation(self) -> bool:
        first = next(iter(self.observations.values()))
        return first.shape[0] == self.length + 1

    @property
    def episode_return(self) -> float | None:
        """The undiscounted return; None for an episode recorded without rewards."""
        return None if self.rewards is None else float(np.sum(self.rewards, dtype=np.float64))

    @property
    def terminated(self) -> bool:
        return bool(self.length and self.terminations[-1])

    @property
    def truncated(self) -> bool:
        return bool(self.length and self.truncations[-1])

    def step_observations(self) -> dict[str, np.ndarray]:
        """Observations aligned with the actions: T rows per key (the final observation dropped)."""
        return {k: v[: self.length] for k, v in self.observations.items()}

    def validate(self, where: str = "episode") -> None:
        """Raise DataError with a one-line reason if the episode is inconsistent or non-finite."""
        t = self.length
        if t == 0:
            raise DataError(f"{where}: episode has no steps")
        if not self.observations:
            raise DataError(f"{where}: episode has no observations")
        if self.actions is not None and self.actions.ndim < 1:
            raise DataError(f"{where}: actions must have a time axis, got shape {self.actions.shape}")
        unit = "actions" if self.actions is not None else "steps"
        for name in ("rewards", "terminations", "truncations"):
            arr = getattr(self, name)
            if arr is not None and arr.shape != (t,):
                raise DataError(f"{where}: {name} has shape {arr.shape} but there are {t} {unit}; "
                                f"expected ({t},)")
        rows = {k: v.shape[0] for k, v in self.observations.items()}
        if len(set(rows.values())) != 1 or next(iter(rows.values())) not in (t, t + 1):
            raise DataError(f"{where}: observation rows {rows} do not match {t} {unit} "
                            f"(expected {t} or {t + 1} rows for every key)")
        numeric = {"actions": self.actions, "rewards": self.rewards,
                   **{f"observations/{k}": v for k, v in self.observations.items()}}
        for name, arr in numeric.items():
            if arr is None:
                continue
            if arr.dtype.kind not in "biuf":
                raise DataError(f"{where}: {name} holds {arr.dtype} data; expected numbers")
            if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
                bad = int(np.argwhere(~np.isfinite(arr.reshape(arr.shape[0], -1)))[0, 0])
                raise DataError(f"{where}: {name} holds NaN or inf (first at step {bad})")
        if np.any(self.terminations[:-1] | self.truncations[:-1]):
            first = int(np.argmax(self.terminations[:-1] | self.truncations[:-1]))
            raise DataError(f"{where}: episode is marked done at step {first} but continues to step {t - 1}")


@dataclass
class DatasetInfo:
    """What a dataset file says about itself, independent of its format."""

    source_format: str  # "native", "d4rl", "minari", "robomimic"
    source: str  # identity of the original data: a path, a Minari dataset id, ...
    env_id: str | None = None  # gymnasium id with version, e.g. "Hopper-v5"
    ref_min_score: float | None = None  # return of the "random" reference, for normalised scores
    ref_max_score: float | None = None  # return of the "expert" reference
    observation_space: dict[str, Any] | None = None  # mtm.data.spaces.space_to_dict
    action_space: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # format-specific metadata, JSON-able


def is_image(arr: np.ndarray) -> bool:
    """Image observations are uint8 (T, H, W, C), the convention every reader follows."""
    return arr.dtype == np.uint8 and arr.ndim >= 4


def select_keys(available: list[str], keys: Collection[str] | None, where: str) -> list[str]:
    """The observation keys to read: all of them, or the requested ones (which must exist)."""
    if keys is None:
        return list(available)
    missing = [k for k in keys if k not in available]
    if missing:
        raise DataError(f"{where}: no observation key {', '.join(map(repr, missing))}; "
                        f"available: {', '.join(available)}")
    return [k for k in available if k in set(keys)]


class EpisodeSource:
    """A readable dataset: its info plus random access to episodes, loaded on demand so that a file
    with images never has to fit in memory. Readers subclass this; ``close()`` releases the file."""

    info: DatasetInfo

    def __len__(self) -> int:
        raise NotImplementedError

    def episode(self, index: int, keys: Collection[str] | None = None) -> Episode:
        """Episode `index`. `keys` limits the observation keys read (None = all): the training view
        of low-dimensional data passes the state keys so image frames are never decoded."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self.episode(i)

    def close(self) -> None:
        pass

    def __enter__(self) -> "EpisodeSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# What a reader may provide beyond EpisodeSource. Consumers test for it with isinstance (the
# methods are matched by name), so a reader gains a capability by defining the methods alone.


@runtime_checkable
class FrameReader(Protocol):
    """Image frames read lazily, window by window, instead of whole episodes: what training reads
    images through (mtm.data.image_windows). The native reader has it; a format whose reader adds
    these methods trains on images without a conversion."""

    def observation_keys(self) -> list[str]:
        """Every observation key of the dataset (image keys included)."""
        ...

    def episode_length(self, index: int) -> int:
        """Steps of episode `index`, read without loading it."""
        ...

    def frames(self, index: int, key: str) -> Any:
        """Observation `key` of episode `index` as an array-like of uint8 (T, H, W, C) frames that
        reads only the rows it is indexed with (an h5py.Dataset)."""
        ...


@runtime_checkable
class FlatReader(Protocol):
    """The whole dataset as concatenated arrays (D4RL's own layout), loaded without splitting it
    into episodes and joining them again (mtm.data.trajectories, mtm.data.summary)."""

    def flat_arrays(self) -> Any:
        """A mtm.data.formats.d4rl.FlatArrays: observations, actions, rewards, episode lengths."""
        ...

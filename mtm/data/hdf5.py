"""What the HDF5 readers share: opening files and reading arrays with errors a user can act on, the
per-step-shape check of readers with a group per episode, and the name an output is written under."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mtm.data.episode import Episode, EpisodeSource
from mtm.errors import DataError
from mtm.io import short_reason

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def open_hdf5(path: str | os.PathLike, *, chunk_cache: bool = True) -> h5py.File:
    """Open an HDF5 file read-only, turning every way it can fail into one clear DataError.
    chunk_cache=False: without HDF5's per-dataset chunk cache (for many datasets open at once)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    if p.is_dir():
        raise DataError(f"{p}: is a directory, expected an HDF5 file")
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:  # unreadable input is the input's problem, not an output's
        raise DataError(f"{p}: cannot read ({(exc.strerror or str(exc)).lower()})") from None
    if head != HDF5_SIGNATURE and not h5py.is_hdf5(p):
        raise DataError(f"{p}: not an HDF5 file")
    try:
        return h5py.File(p, "r") if chunk_cache else h5py.File(p, "r", rdcc_nbytes=0)
    except OSError as exc:
        raise DataError(f"{p}: HDF5 file is truncated or corrupt ({short_reason(exc)})") from None


def read_array(group: h5py.Group, name: str, where: str) -> np.ndarray:
    """Read a whole dataset, reporting a missing key or a corrupt block as a DataError."""
    if name not in group:
        raise DataError(f"{where}: missing dataset '{name}'")
    obj = group[name]
    if not isinstance(obj, h5py.Dataset):
        raise DataError(f"{where}: '{name}' is a group, expected a dataset")
    try:
        return obj[()]
    except OSError as exc:
        raise DataError(f"{where}: dataset '{name}' is unreadable, the file may be corrupt "
                        f"({short_reason(exc)})") from None


def datasets_under(group: h5py.Group) -> dict[str, h5py.Dataset]:
    """Every dataset below `group` by its relative path: a flattened nested Dict key ("proprio/pos")
    is stored as nested groups."""
    found: dict[str, h5py.Dataset] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            found[name] = obj

    group.visititems(visit)
    return found


def parse_json(text: Any, what: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        raise DataError(f"{what} is not valid JSON") from None


def floats_to_float32(arr: np.ndarray) -> np.ndarray:
    """Floating-point arrays as float32 (what mtm trains on); integers and uint8 images keep their dtype."""
    return arr.astype(np.float32, copy=False) if np.issubdtype(arr.dtype, np.floating) else arr


def optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


class GroupPerEpisode(EpisodeSource):
    """A reader whose episodes are HDF5 groups under one parent group (native, Minari, robomimic).
    Subclasses set `_file`, `_names` (the episode groups, in episode order) and `_episodes_parent`."""

    _file: h5py.File | None
    _names: list[str]
    _episodes_parent: h5py.Group

    def __len__(self) -> int:
        return len(self._names)

    def close(self) -> None:
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None

    def _group(self, index: int) -> h5py.Group:
        if self._file is None:
            raise RuntimeError("source is closed")  # a bug in the caller, not a data problem
        if not 0 <= index < len(self._names):
            raise IndexError(index)
        return self._episodes_parent[self._names[index]]

    def _checked(self, episode: Episode, index: int, where: str) -> Episode:
        episode.validate(where)
        self._check_step_shapes(index, step_shapes(episode), where)
        return episode

    def _check_step_shapes(self, index: int, shapes: dict[str, tuple[int, ...]], where: str) -> None:
        """Every episode must have episode 0's per-step shapes: consumers stack episodes, and a file
        whose episodes disagree would otherwise pass `inspect` and crash deep inside `train`.
        Episode 0's shapes are learnt when it is read (or looked up when another is read first)."""
        cache: dict[str, tuple[int, ...]] = self.__dict__.setdefault("_episode0_shapes", {})
        if index == 0:
            for key, shape in shapes.items():
                cache.setdefault(key, tuple(shape))
            return
        missing = [key for key in shapes if key not in cache]
        if missing:
            cache.update({k: v for k, v in self._episode0_shapes_of(missing).items() if k not in cache})
        # A modality episode 0 lacks (its actions, in a partly labelled file) takes its reference
        # shape from the first episode read that has it.
        named: dict[str, str] = self.__dict__.setdefault("_reference_names", {})
        for key, shape in shapes.items():
            reference = cache.get(key)
            if reference is None:
                cache[key], named[key] = tuple(shape), self._names[index]
            elif tuple(shape) != reference:
                raise DataError(f"{where}: {key} has per-step shape {tuple(shape)} but "
                                f"{named.get(key, self._names[0])} has {reference}; every episode of a "
                                f"dataset must have the same shapes")

    def _episode0_shapes_of(self, keys: list[str]) -> dict[str, tuple[int, ...]]:
        """Episode 0's per-step shapes of `keys` ("actions", "observations/<key>"), by reading it."""
        observation_keys = [k.split("/", 1)[1] for k in keys if k.startswith("observations/")]
        return step_shapes(self.episode(0, keys=observation_keys or None))


def step_shapes(episode: Episode) -> dict[str, tuple[int, ...]]:
    shapes = {f"observations/{k}": tuple(v.shape[1:]) for k, v in episode.observations.items()}
    if episode.actions is not None:
        shapes["actions"] = tuple(episode.actions.shape[1:])
    return shapes


def partial_path(path: Path) -> Path:
    """Where an output is written before it is complete (renamed into place on success)."""
    return path.with_name(path.name + ".partial")

"""robomimic's processed HDF5 files (``data/demo_{i}/obs/...``, ``mask/<filter>``): the reader.

docs/data_format.md ("robomimic") maps the layout onto `Episode`. The one quirk: robomimic's
``dones`` can be 1 on every step where the task is solved (its ``done_mode`` 0 and 2), also before
the demo's last step, while the demo goes on. The demo shows that the episode did not end there, so
only the last step's flag counts: ``terminations[-1] = dones[-1]``; a demo whose last step is not
done simply stopped (the operator or a time limit ended it), a truncation. One handle is held open;
each demo is read when asked for.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Collection

import h5py
import numpy as np

from mtm.data.episode import DatasetInfo, Episode, select_keys
from mtm.data.hdf5 import GroupPerEpisode, open_hdf5, parse_json, read_array
from mtm.data.spaces import space_to_dict
from mtm.errors import DataError
from mtm.io import short_reason

DEMO_RE = re.compile(r"demo_(\d+)")
# The per-demo entries this reader uses; anything else (states, action_dict, datagen_info, ...) is
# listed in info.extra["unread_keys"] so that nobody wonders where it went.
READ_KEYS = ("obs", "next_obs", "actions", "rewards", "dones")


def _demo_number(name: str) -> int:
    return int(DEMO_RE.fullmatch(name).group(1))


def is_robomimic(path: str | os.PathLike) -> bool:
    """Whether `path` is an HDF5 file with robomimic's ``data/demo_*`` layout. Never raises."""
    try:
        with h5py.File(path, "r") as f:
            data = f.get("data")
            if not isinstance(data, h5py.Group):
                return False
            return "env_args" in data.attrs or any(
                DEMO_RE.fullmatch(k) and isinstance(data.get(k), h5py.Group) for k in data
            )
    except (OSError, ValueError):
        return False


def _attr_text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class RobomimicSource(GroupPerEpisode):
    """Read a robomimic file; ``filter_key`` restricts it to the demos of ``mask/<filter_key>``."""

    def __init__(self, path: str | os.PathLike, filter_key: str | None = None) -> None:
        self.path = Path(path)
        self.filter_key = filter_key
        self._file = open_hdf5(self.path)
        try:
            self._open(filter_key)
        except BaseException:
            self.close()
            raise

    def _open(self, filter_key: str | None) -> None:
        f = self._file
        data = f.get("data")
        if not isinstance(data, h5py.Group):
            raise DataError(f"{self.path}: no 'data' group; not a robomimic file")
        self._episodes_parent = data
        all_demos = sorted((k for k in data if DEMO_RE.fullmatch(k)), key=_demo_number)
        masks = f.get("mask")
        filters = sorted(masks.keys()) if isinstance(masks, h5py.Group) else []
        self._names = all_demos if filter_key is None else self._filtered(filter_key, filters, set(all_demos))
        if not self._names:
            raise DataError(f"{self.path}: holds no demos" + (f" in mask/{filter_key}" if filter_key else ""))

        env_args = data.attrs.get("env_args")
        if env_args is not None:
            env_args = parse_json(_attr_text(env_args), f"{self.path}: data.attrs['env_args']")
        extra: dict[str, Any] = {"env_args": env_args, "num_demos": len(all_demos), "filter_key": filter_key,
                                 "filters": filters}
        if "total" in data.attrs:
            extra["total"] = int(data.attrs["total"])
        first = data[self._names[0]]
        extra["unread_keys"] = sorted(k for k in first if k not in READ_KEYS)
        observation_space, action_space = _derived_spaces(first)
        env_name = env_args.get("env_name") if isinstance(env_args, dict) else None
        self.info = DatasetInfo(source_format="robomimic", source=str(self.path),
                                env_id=None if env_name is None else str(env_name),
                                observation_space=observation_space, action_space=action_space, extra=extra)

    def _filtered(self, filter_key: str, filters: list[str], demos: set[str]) -> list[str]:
        if filter_key not in filters:
            available = ", ".join(filters) if filters else "none (the file has no mask/ group)"
            raise DataError(f"{self.path}: no filter '{filter_key}'; available filters: {available}")
        listed = [_attr_text(x) for x in read_array(self._file["mask"], filter_key, f"{self.path} mask")]
        unknown = [name for name in listed if name not in demos]
        if unknown:
            raise DataError(f"{self.path}: mask/{filter_key} lists demos that are not in data/: "
                            f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
        return sorted(set(listed), key=_demo_number)

    def filter_sizes(self) -> dict[str, int]:
        """{filter key: number of demos its ``mask/<key>`` lists} for every filter in the file."""
        masks = self._file.get("mask")
        if not isinstance(masks, h5py.Group):
            return {}
        return {name: len({_attr_text(x) for x in read_array(masks, name, f"{self.path} mask")})
                for name in sorted(masks) if isinstance(masks.get(name), h5py.Dataset)}

    def episode_length(self, index: int) -> int:
        g = self._group(index)
        for key in ("actions", "dones"):
            if isinstance(g.get(key), h5py.Dataset):
                return int(g[key].shape[0])
        return int(g.attrs.get("num_samples", 0))

    def observation_keys(self) -> list[str]:
        return list(self._group(0)["obs"].keys()) if self._names and "obs" in self._group(0) else []

    def episode(self, index: int, keys: Collection[str] | None = None) -> Episode:
        g = self._group(index)
        name = self._names[index]
        where = f"{self.path} {name}"
        if not isinstance(g.get("obs"), h5py.Group):
            hint = (" (the file holds only simulator states: extract observations first with "
                    "robomimic's dataset_states_to_obs.py)" if "states" in g else "")
            raise DataError(f"{where}: missing group 'obs'{hint}")
        # A demo recorded without actions (or rewards) simply lacks that dataset; its length then
        # comes from dones.
        actions = read_array(g, "actions", where) if "actions" in g else None
        dones = read_array(g, "dones", where)
        steps_of = actions if actions is not None else dones
        t = int(steps_of.shape[0]) if steps_of.ndim else 0
        if t == 0:
            raise DataError(f"{where}: demo has no steps")
        num_samples = g.attrs.get("num_samples")
        if num_samples is not None and int(num_samples) != t:
            raise DataError(f"{where}: attribute num_samples is {int(num_samples)} but "
                            f"{'actions' if actions is not None else 'dones'} has {t} rows")
        if dones.shape != (t,):
            raise DataError(f"{where}: dones has shape {dones.shape} but there are {t} actions; expected ({t},)")
        terminations = np.zeros(t, bool)
        truncations = np.zeros(t, bool)
        terminations[-1], truncations[-1] = bool(dones[-1]), not dones[-1]
        episode = Episode(
            observations=self._observations(g, t, where, keys),
            actions=None if actions is None else actions.astype(np.float32, copy=False),
            rewards=read_array(g, "rewards", where).astype(np.float32) if "rewards" in g else None,
            terminations=terminations,
            truncations=truncations,
            source_id=name,
        )
        return self._checked(episode, index, where)

    def _observations(self, g: h5py.Group, t: int, where: str, keys: Collection[str] | None) -> dict[str, np.ndarray]:
        obs = g["obs"]
        next_obs = g.get("next_obs")
        final = isinstance(next_obs, h5py.Group)
        if final:
            missing = [k for k in obs if k not in next_obs]
            if missing:
                raise DataError(f"{where}: next_obs lacks {', '.join(missing)}, which obs has; "
                                f"remove next_obs or write it for every key")
        out: dict[str, np.ndarray] = {}
        for key in select_keys(list(obs.keys()), keys, where):
            ds = obs[key]
            if not isinstance(ds, h5py.Dataset):
                raise DataError(f"{where}: obs/{key} is a group, expected a dataset")
            if ds.dtype.kind not in "biuf":
                raise DataError(f"{where}: obs/{key} holds {ds.dtype} data; mtm needs numeric observations")
            if ds.ndim == 0 or ds.shape[0] != t:
                raise DataError(f"{where}: obs/{key} has shape {ds.shape} but there are {t} actions; "
                                f"obs rows must match actions")
            # Allocate the T+1 rows once and let HDF5 fill them (and convert the dtype) in place.
            arr = np.empty((t + int(final),) + ds.shape[1:], np.uint8 if ds.dtype == np.uint8 else np.float32)
            _read_rows(ds, arr, slice(0, t), slice(0, t), f"{where} obs/{key}")
            if final:
                nds = next_obs[key]
                if not isinstance(nds, h5py.Dataset) or nds.shape != ds.shape:
                    shape = nds.shape if isinstance(nds, h5py.Dataset) else "a group"
                    raise DataError(f"{where}: next_obs/{key} has shape {shape}, obs/{key} has {ds.shape}")
                _read_rows(nds, arr, slice(t - 1, t), slice(t, t + 1), f"{where} next_obs/{key}")
            out[key] = arr
        if not out:
            raise DataError(f"{where}: 'obs' group is empty")
        return out


def _read_rows(ds: h5py.Dataset, out: np.ndarray, source: slice, dest: slice, where: str) -> None:
    try:
        if ds.dtype.kind == "b":  # HDF5 cannot convert its bool enum to float in place
            out[dest] = ds[source]
        else:
            ds.read_direct(out, source_sel=np.s_[source], dest_sel=np.s_[dest])
    except OSError as exc:
        raise DataError(f"{where}: unreadable, the file may be corrupt ({short_reason(exc)})") from None


def _derived_spaces(demo: h5py.Group) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Spaces from one demo's shapes: uint8 arrays are 0..255 images, the rest unbounded float32."""
    from gymnasium import spaces  # late: mtm inspect / convert load gymnasium only here

    def box(ds: h5py.Dataset) -> spaces.Box:
        shape = tuple(ds.shape[1:])
        if ds.dtype == np.uint8:
            return spaces.Box(0, 255, shape, np.uint8)
        return spaces.Box(-np.inf, np.inf, shape, np.float32)

    obs = demo.get("obs")
    observation_space = None
    if isinstance(obs, h5py.Group) and all(isinstance(v, h5py.Dataset) and v.ndim for v in obs.values()):
        observation_space = space_to_dict(spaces.Dict({k: box(v) for k, v in obs.items()}))
    actions = demo.get("actions")
    action_space = space_to_dict(box(actions)) if isinstance(actions, h5py.Dataset) and actions.ndim else None
    return observation_space, action_space

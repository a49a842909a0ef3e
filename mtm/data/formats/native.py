"""mtm's own episode format (HDF5): the writer and the reader.

docs/data_format.md ("The native file") is the reference for the layout, the schema versions (2 only
when an episode lacks actions or rewards, so an older mtm says "upgrade mtm" rather than failing on
the missing dataset), the storage of images (one gzip chunk per frame) and crash-safe writing. HDF5
writes through `mtm.io.DeferredFailureFile`, so a full disk or a read-only mount is one OutputError
(and the partial file removed) rather than a cascade of HDF5 errors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Collection

import h5py
import numpy as np

from mtm.version import __version__
from mtm.data.episode import DatasetInfo, Episode, is_image, select_keys
from mtm.data.hdf5 import (GroupPerEpisode, datasets_under, floats_to_float32, open_hdf5, optional_float,
                           parse_json, partial_path, read_array)
from mtm.errors import DataError, OutputError
from mtm.interrupts import stop_signals_held
from mtm.io import DeferredFailureFile, check_output_path, fsync_dir, open_partial, write_failure

FORMAT_NAME = "mtm-episodes"
SCHEMA_VERSION = 2  # the newest version this mtm reads
COMPLETE_SCHEMA_VERSION = 1  # what a file whose episodes all have actions and rewards is written as
EPISODES_GROUP = "episodes"


def episode_name(index: int) -> str:
    return f"ep_{index:06d}"


def is_native(f: h5py.File) -> bool:
    return f.attrs.get("format") == FORMAT_NAME


class EpisodeWriter:
    """Append episodes to a new native file. Leaving its ``with`` block commits; leaving it with an
    exception deletes the partial file (``mtm collect`` catches KeyboardInterrupt inside the block)."""

    def __init__(self, path: str | os.PathLike, info: DatasetInfo, *, overwrite: bool = False,
                 image_compression_level: int = 4) -> None:
        self.path = check_output_path(path, overwrite)
        self.tmp_path = partial_path(self.path)
        self.info = info
        self.image_compression_level = image_compression_level
        self.num_episodes = 0
        self.num_steps = 0
        self._layout: dict[str, tuple[tuple[int, ...], np.dtype]] | None = None
        self._file: h5py.File | None = None
        self._raw: DeferredFailureFile | None = DeferredFailureFile(open_partial(self.tmp_path, self.path))
        try:
            self._file = h5py.File(self._raw, "w")
            self._write_header()
            self._check_writes()
        except BaseException as exc:
            self.abort()
            self._raise_write_failure(exc)
            raise

    def _write_header(self) -> None:
        f = self._file
        f.attrs["format"] = FORMAT_NAME
        f.attrs["schema_version"] = COMPLETE_SCHEMA_VERSION
        f.attrs["created_by"] = f"mtm {__version__}"
        self._write_info()
        f.attrs["num_episodes"] = 0
        f.attrs["num_steps"] = 0
        f.create_group(EPISODES_GROUP)
        f.flush()

    def update_info(self, info: DatasetInfo) -> None:
        """Describe the data differently before committing (an interrupted `mtm collect` records the
        seeds it really holds)."""
        if self._file is None:
            raise RuntimeError("writer is closed")
        self.info = info
        try:
            with stop_signals_held():  # a Ctrl-C here must not cost the episodes already written
                self._write_info()
                self._file.flush()
                self._check_writes()
        except BaseException as exc:
            self._raise_write_failure(exc)
            raise

    def _write_info(self) -> None:
        f, info = self._file, self.info
        f.attrs["source_format"] = info.source_format
        f.attrs["source"] = info.source
        optional = {"env_id": info.env_id, "ref_min_score": optional_float(info.ref_min_score),
                    "ref_max_score": optional_float(info.ref_max_score)}
        for name in ("observation_space", "action_space"):
            optional[name] = None if getattr(info, name) is None else json.dumps(getattr(info, name))
        for name, value in optional.items():
            if value is not None:
                f.attrs[name] = value
            elif name in f.attrs:
                del f.attrs[name]
        f.attrs["extra"] = json.dumps(info.extra)

    def _check_writes(self) -> None:
        """Raise what the file under HDF5 recorded (mtm.io.DeferredFailureFile), as one clear error."""
        if self._raw is not None and self._raw.failure is not None:
            self._raise_write_failure(self._raw.failure)
            raise self._raw.failure

    def _raise_write_failure(self, exc: BaseException) -> None:
        """If the disk (not mtm) is why `exc` happened, raise that as an OutputError."""
        recorded = self._raw.failure if self._raw is not None else None
        if isinstance(recorded, KeyboardInterrupt):
            raise type(recorded)() from None  # Ctrl-C or SIGTERM (mtm.interrupts.Terminated), as it came
        for cause in (recorded, exc):
            failure = write_failure(cause, self.path) if cause is not None else None
            if failure is not None:
                raise OutputError(f"{failure}; nothing was written") from None

    def _check_layout(self, episode: Episode, where: str) -> None:
        """Every episode stores each key with the first one's per-step shape and kind of value (an
        image key stays uint8 frames, chunked per frame); the layout is recorded only once checked."""
        layout = {k: (v.shape[1:], is_image(v)) for k, v in episode.observations.items()}
        if episode.actions is not None:
            layout["actions"] = (episode.actions.shape[1:], False)
        if self._layout is None:
            self._layout = layout
            return
        observations, reference = set(layout) - {"actions"}, set(self._layout) - {"actions"}
        if observations != reference:
            raise DataError(f"{where}: observation keys {sorted(observations)} differ from the first "
                            f"episode's {sorted(reference)}")
        for key, (shape, image) in layout.items():
            if key not in self._layout:  # the first episode with actions: it describes them
                continue
            if shape != self._layout[key][0]:
                raise DataError(f"{where}: '{key}' has per-step shape {shape}, the first episode had "
                                f"{self._layout[key][0]}")
            if image != self._layout[key][1]:
                kinds = {True: "uint8 image frames", False: "numbers"}
                raise DataError(f"{where}: '{key}' holds {kinds[image]}, the first episode's held {kinds[not image]}")
        if "actions" in layout and "actions" not in self._layout:
            self._layout["actions"] = layout["actions"]

    def add(self, episode: Episode) -> None:
        if self._file is None:
            raise RuntimeError("writer is closed")
        where = f"{self.info.source} episode {self.num_episodes}"
        episode.validate(where)
        self._check_layout(episode, where)
        try:
            self._add(episode)
            self._check_writes()
        except BaseException as exc:
            self._raise_write_failure(exc)
            raise

    def _add(self, episode: Episode) -> None:
        g = self._file[EPISODES_GROUP].create_group(episode_name(self.num_episodes))
        g.attrs["length"] = episode.length
        g.attrs["has_final_observation"] = episode.has_final_observation
        if episode.seed is not None:
            g.attrs["seed"] = int(episode.seed)
        if episode.source_id is not None:
            g.attrs["source_id"] = episode.source_id
        obs = g.create_group("observations")
        for key, arr in episode.observations.items():
            if is_image(arr):
                obs.create_dataset(key, data=arr, chunks=(1,) + arr.shape[1:], compression="gzip",
                                   compression_opts=self.image_compression_level)
            else:
                obs.create_dataset(key, data=floats_to_float32(arr))
        if episode.actions is not None:
            g.create_dataset("actions", data=floats_to_float32(episode.actions))
        if episode.rewards is not None:
            g.create_dataset("rewards", data=episode.rewards.astype(np.float32))
        if (episode.actions is None or episode.rewards is None) and \
                self._file.attrs["schema_version"] < SCHEMA_VERSION:
            self._file.attrs["schema_version"] = SCHEMA_VERSION  # an older mtm says "upgrade mtm"
        g.create_dataset("terminations", data=episode.terminations.astype(bool))
        g.create_dataset("truncations", data=episode.truncations.astype(bool))
        self.num_episodes += 1
        self.num_steps += episode.length
        self._file.attrs["num_episodes"] = self.num_episodes
        self._file.attrs["num_steps"] = self.num_steps
        self._file.flush()

    def commit(self) -> Path:
        """Close the file and move it to the output path (replacing an old file only now). Ctrl-C and
        SIGTERM wait until it is done (mtm.interrupts): an interruption mid-commit would delete every
        episode the file holds."""
        with stop_signals_held():
            return self._commit()

    def _commit(self) -> Path:
        if self._file is not None:
            try:
                self._file.close()
                self._file = None
                self._check_writes()
                os.fsync(self._raw.fileno())  # on disk before the rename makes it the output
            except BaseException as exc:
                self.abort()
                self._raise_write_failure(exc)
                raise
            # Renamed while still locked: the lock stays with the file, and a partial file that
            # another writer creates from now on is a new one.
            os.replace(self.tmp_path, self.path)
            self._raw.close()
            self._raw = None
            fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        """Close and delete the partial file; the output path is left as it was."""
        if self._file is not None:
            try:
                self._file.close()  # cannot fail on the disk's account: see DeferredFailureFile
            except Exception:  # noqa: BLE001 - the file is being thrown away whatever went wrong
                pass
            self._file = None
        if self._raw is not None:
            self.tmp_path.unlink(missing_ok=True)  # while still locked: no one else is using it
            self._raw.close()
            self._raw = None

    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _json_attr(f: h5py.File, name: str) -> Any:
    value = f.attrs.get(name)
    return None if value is None else parse_json(value, f"{f.filename}: attribute '{name}'")


class NativeSource(GroupPerEpisode):
    """Read a native file. Episodes load on demand; ``frames()`` reads single image frames lazily
    (it is a `mtm.data.episode.FrameReader`).

    The file is opened without HDF5's chunk cache: training keeps up to a thousand frame datasets
    open (mtm.data.image_windows), and a cache per dataset would grow the process by gigabytes,
    while random windows almost never read a chunk twice. Whole episodes read each chunk once anyway.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._file = f = open_hdf5(self.path, chunk_cache=False)
        try:
            if not is_native(f):
                raise DataError(f"{self.path}: not an mtm episode file (attribute format != {FORMAT_NAME!r})")
            version = int(f.attrs.get("schema_version", -1))
            if version > SCHEMA_VERSION:
                raise DataError(f"{self.path}: schema version {version} is newer than this mtm understands "
                                f"({SCHEMA_VERSION}); upgrade mtm")
            if EPISODES_GROUP not in f:
                raise DataError(f"{self.path}: missing group '{EPISODES_GROUP}'")
            self._episodes_parent = f[EPISODES_GROUP]
            self._names = sorted(self._episodes_parent.keys())
            if not self._names:
                raise DataError(f"{self.path}: holds no episodes")
        except BaseException:
            self.close()
            raise
        env_id = f.attrs.get("env_id")
        self.info = DatasetInfo(
            source_format=str(f.attrs.get("source_format", "native")),
            source=str(f.attrs.get("source", str(self.path))),
            env_id=None if env_id is None else str(env_id),
            ref_min_score=optional_float(f.attrs.get("ref_min_score")),
            ref_max_score=optional_float(f.attrs.get("ref_max_score")),
            observation_space=_json_attr(f, "observation_space"),
            action_space=_json_attr(f, "action_space"),
            extra=_json_attr(f, "extra") or {},
        )

    def episode_length(self, index: int) -> int:
        g = self._group(index)
        if "length" in g.attrs:
            return int(g.attrs["length"])
        return int(g["actions"].shape[0]) if "actions" in g else int(g["terminations"].shape[0])

    def observation_keys(self) -> list[str]:
        return list(datasets_under(self._group(0)["observations"])) if self._names else []

    def _stored_shapes(self, index: int) -> dict[str, tuple[int, ...]]:
        """Per-step shapes of every array of an episode, from the file's metadata (nothing is read)."""
        g = self._group(index)
        obs, shapes = g.get("observations"), {}
        if isinstance(obs, h5py.Group):
            shapes = {f"observations/{k}": tuple(ds.shape[1:]) for k, ds in datasets_under(obs).items()}
        if isinstance(g.get("actions"), h5py.Dataset):
            shapes["actions"] = tuple(g["actions"].shape[1:])
        return shapes

    def _episode0_shapes_of(self, keys: list[str]) -> dict[str, tuple[int, ...]]:
        return self._stored_shapes(0)

    def episode(self, index: int, keys: Collection[str] | None = None) -> Episode:
        g = self._group(index)
        where = f"{self.path} {self._names[index]}"
        if "observations" not in g:
            raise DataError(f"{where}: missing group 'observations'")
        # Every key, read or not: a summary reads one key per episode, training reads frames lazily.
        self._check_step_shapes(index, self._stored_shapes(index), where)
        obs_group = g["observations"]
        keys = select_keys(list(datasets_under(obs_group)), keys, where)
        seed, source_id = g.attrs.get("seed"), g.attrs.get("source_id")
        episode = Episode(
            observations={k: read_array(obs_group, k, where) for k in keys},
            actions=read_array(g, "actions", where) if "actions" in g else None,
            rewards=read_array(g, "rewards", where) if "rewards" in g else None,
            terminations=read_array(g, "terminations", where).astype(bool),
            truncations=read_array(g, "truncations", where).astype(bool),
            seed=None if seed is None else int(seed),
            source_id=None if source_id is None else str(source_id),
        )
        episode.validate(where)
        return episode

    def frames(self, index: int, key: str) -> h5py.Dataset:
        """The h5py dataset of one observation key: index it to read only the frames you need."""
        return self._group(index)["observations"][key]

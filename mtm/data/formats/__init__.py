"""Dataset readers (each an `EpisodeSource`), one module per format, and `open_dataset`, which picks
one for a path from its layout (`detect_format`) unless the caller names the format. A `DataSource`
is a path whose format is settled: what loaded training data carries, so that whatever reads the
file again (image frames) opens it with the same reader, without detecting the format again."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py

from mtm.data.episode import EpisodeSource, FrameReader
from mtm.data.formats.d4rl import D4RLSource, is_d4rl
from mtm.data.formats.minari import (MinariSource, datasets_root, is_minari, looks_like_dataset_id,
                                     minari_datasets_in, resolve_dataset_id)
from mtm.data.formats.native import NativeSource, is_native
from mtm.data.formats.robomimic import RobomimicSource, is_robomimic
from mtm.data.hdf5 import open_hdf5
from mtm.errors import ConfigError, DataError

FORMATS = ("native", "d4rl", "minari", "robomimic")
_READERS: dict[str, type[EpisodeSource]] = {"native": NativeSource, "d4rl": D4RLSource, "minari": MinariSource,
                                            "robomimic": RobomimicSource}


def detect_format(path: str | os.PathLike) -> str:
    """Name of the format a file or Minari dataset folder is in; DataError when none fits."""
    p = resolve_path(path)
    if p.is_dir():
        if is_minari(p):
            return "minari"
        inside = minari_datasets_in(p)
        if inside:
            raise DataError(f"{p}: is a folder of {len(inside)} Minari dataset{'s' if len(inside) > 1 else ''}, "
                            f"not one dataset; give one of them: {_list_datasets(p, inside)}")
        raise DataError(f"{p}: is a directory but not a Minari dataset (expected data/main_data.hdf5 and "
                        f"metadata.json inside); give a dataset file or a Minari dataset folder")
    with open_hdf5(p) as f:  # turns a missing, non-HDF5 or corrupt file into a clear DataError
        if is_native(f):
            return "native"
        if is_d4rl(f):
            return "d4rl"
        top_level = _describe_top_level(f)
    if is_minari(p):
        return "minari"
    if is_robomimic(p):
        return "robomimic"
    raise DataError(f"{p}: unrecognised dataset layout (top level: {top_level}); mtm reads "
                    f"{', '.join(FORMATS)} files — pass --format to force one")


def resolve_path(path: str | os.PathLike) -> Path:
    """`path` itself when it exists or is no Minari dataset id; else the id's folder under the user's
    Minari data folder (DataError, saying where it looked, when the id is not there)."""
    p = Path(path)
    if p.exists() or not looks_like_dataset_id(str(path)):
        return p
    return resolve_dataset_id(str(path))


def _list_datasets(folder: Path, datasets: list[Path], limit: int = 10) -> str:
    root = datasets_root()
    names = []
    for d in datasets:
        try:  # under the Minari data folder: the id, which mtm takes as it is
            names.append(str(d.resolve().relative_to(root.resolve())))
        except ValueError:
            names.append(str(d))
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def open_dataset(path: str | os.PathLike, format: str | None = None, *,
                 filter_key: str | None = None) -> EpisodeSource:
    """Open a dataset in any supported format; `format` forces a reader instead of detecting one.
    `filter_key` selects a robomimic split (``mask/<filter_key>``); with any other format it is an
    error, since silently ignoring it would train on the wrong episodes."""
    if format is not None and format not in FORMATS:
        raise ConfigError(f"unknown dataset format {format!r}; choose one of {', '.join(FORMATS)}")
    path = resolve_path(path)
    fmt = format or detect_format(path)
    if filter_key is not None and fmt != "robomimic":
        raise ConfigError(f"a filter key only applies to robomimic files, but {path} is {fmt}")
    if fmt == "robomimic":
        return RobomimicSource(path, filter_key=filter_key)
    return _READERS[fmt](path)


@dataclass(frozen=True)
class DataSource:
    """A dataset file (or Minari folder) and the format it is read as."""

    path: str
    format: str

    @classmethod
    def resolve(cls, path: str | os.PathLike, format: str | None = None) -> "DataSource":
        """`path` read as `format`, or as the format its layout shows (detected here, once)."""
        if format is not None and format not in FORMATS:
            raise ConfigError(f"unknown dataset format {format!r}; choose one of {', '.join(FORMATS)}")
        path = resolve_path(path)
        return cls(str(path), format or detect_format(path))

    def open(self) -> EpisodeSource:
        return open_dataset(self.path, self.format)

    @property
    def reads_frames(self) -> bool:
        """Whether its reader reads image frames lazily (a `FrameReader`), as training needs."""
        return issubclass(_READERS[self.format], FrameReader)


def _describe_top_level(f: h5py.File, limit: int = 8) -> str:
    names = [f"{k}/" if isinstance(f.get(k), h5py.Group) else k for k in f.keys()]
    if not names:
        return "empty file"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")

"""Minari datasets (HDF5 storage, as Minari 0.5 writes them): the reader.

docs/data_format.md ("Minari") maps the layout onto `Episode`. Quirks handled here: image spaces
(Minari's rule: a uint8 Box of shape (H, W) or (H, W, C) with H, W >= 32 and bounds 0..255) are
JPEG-encoded frame by frame when ``jpeg_encoding`` is true (the default since 0.5.3), stored as a
variable-length uint8 dataset (T+1,), or as a plain (T+1, nbytes) uint8 dataset when every frame
happens to encode to the same number of bytes (a constant image). Frames come back as uint8
(T+1, H, W, C); a grey (H, W) image gets a channel axis of 1 and its space is widened to match.
Tuple entries are groups ``_index_{j}``. Episodes are decoded one at a time, from one open handle.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any, Collection

import h5py
import numpy as np

from mtm.data.episode import STATE_KEY, DatasetInfo, Episode, select_keys
from mtm.data.hdf5 import (GroupPerEpisode, datasets_under, floats_to_float32, open_hdf5, optional_float,
                           parse_json, read_array)
from mtm.data.spaces import space_to_dict
from mtm.errors import DataError

MAIN_FILE = "main_data.hdf5"
METADATA_FILE = "metadata.json"
EPISODE_RE = re.compile(r"episode_(\d+)")
# metadata.json entries turned into DatasetInfo fields rather than copied into `extra`.
_CONVERTED_METADATA = {"observation_space", "action_space", "env_spec", "eval_env_spec",
                       "ref_min_score", "ref_max_score"}


def _locate(path: Path) -> tuple[Path, Path | None]:
    """(where main_data.hdf5 is or would be, metadata.json if found) for the dataset folder, its
    ``data/`` folder or the HDF5 file itself."""
    if path.is_file():
        data_file = path
    elif (path / "data").is_dir():
        data_file = path / "data" / MAIN_FILE
    else:
        data_file = path / MAIN_FILE
    data_dir = data_file.parent
    candidates = (d / METADATA_FILE for d in (data_dir, data_dir.parent))
    metadata = next((c for c in candidates if c.is_file()), None)
    return data_file, metadata


def _has_episode_groups(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return any(EPISODE_RE.fullmatch(k) and isinstance(f.get(k), h5py.Group) for k in f)
    except (OSError, ValueError):
        return False


def is_minari(path: str | os.PathLike) -> bool:
    """Whether `path` looks like a Minari dataset (folder, its data/ folder, or main_data.hdf5); never
    raises. main_data.hdf5 without metadata.json counts, so that `MinariSource` can say what is missing."""
    p = Path(path)
    if not p.exists():
        return False
    data_file, metadata = _locate(p)
    if p.is_dir():
        return data_file.is_file() or (metadata is not None and _is_minari_metadata(metadata))
    return p.name == MAIN_FILE or (metadata is not None and _has_episode_groups(p))


# A Minari dataset id, as `minari download` and `minari.load_dataset` take it: namespace(s) and a
# name ending in a version, e.g. mujoco/hopper/expert-v0 (minari.storage's id grammar, simplified).
DATASET_ID_RE = re.compile(r"[\w.:-]+(?:/[\w.:-]+)*-v\d+")


def datasets_root() -> Path:
    """The folder Minari keeps local datasets in: $MINARI_DATASETS_PATH, else ~/.minari/datasets
    (minari.storage.datasets_root_dir without creating it)."""
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env).expanduser() if env else Path.home() / ".minari" / "datasets"


def looks_like_dataset_id(text: str) -> bool:
    """Whether `text` reads as a Minari dataset id rather than a file path."""
    return (not text.startswith(("/", ".", "~")) and not text.endswith((".hdf5", ".h5"))
            and DATASET_ID_RE.fullmatch(text) is not None)


def resolve_dataset_id(dataset_id: str) -> Path:
    """The local folder of a Minari dataset id; DataError (saying where it looked) when it has none."""
    root = datasets_root()
    folder = root / dataset_id
    if is_minari(folder):
        return folder
    where = f"{root} ($MINARI_DATASETS_PATH)" if os.environ.get("MINARI_DATASETS_PATH") else \
        f"{root} (Minari's default; set MINARI_DATASETS_PATH to look elsewhere)"
    base = dataset_id.rsplit("-v", 1)[0]
    versions = sorted(d.name for d in folder.parent.glob(f"{Path(base).name}-v*") if is_minari(d)) \
        if folder.parent.is_dir() else []
    hint = (f"; versions there: {', '.join(str(Path(dataset_id).parent / v) for v in versions)}" if versions
            else f"; download it with `minari download {dataset_id}` or give the path of a dataset file")
    raise DataError(f"{dataset_id}: no such file, and no Minari dataset of that id under {where}{hint}")


def minari_datasets_in(folder: Path, depth: int = 4) -> list[Path]:
    """Minari dataset folders inside `folder` (a namespace folder), at most `depth` levels down."""
    found: list[Path] = []
    try:
        children = sorted(c for c in folder.iterdir() if c.is_dir())
    except OSError:
        return found
    for child in children:
        if is_minari(child):
            found.append(child)
        elif depth > 1 and child.name != "data":
            found.extend(minari_datasets_in(child, depth - 1))
    return found


def _is_minari_metadata(path: Path) -> bool:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "data_format" in meta and "total_episodes" in meta


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())  # Minari writes Infinity for unbounded Box bounds
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object of dataset metadata")
    return meta


def _parse_json_field(meta: dict[str, Any], name: str, where: Path) -> Any:
    """A metadata entry that Minari stores as a JSON string inside the JSON (spaces, env specs)."""
    value = meta.get(name)
    return parse_json(value, f"{where}: '{name}'") if isinstance(value, str) else value


def _leaf_spaces(space: dict[str, Any] | None, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Flat {observation key: leaf space} in the key naming the episodes use."""
    if space is None:
        return {}
    if space.get("type") == "Dict":
        named = space.get("subspaces", {}).items()
    elif space.get("type") == "Tuple":
        named = ((f"_index_{i}", sub) for i, sub in enumerate(space.get("subspaces", [])))
    else:
        return {prefix.rstrip("/") or STATE_KEY: space}
    return {leaf: s for key, sub in named for leaf, s in _leaf_spaces(sub, f"{prefix}{key}/").items()}


def _is_image_space(space: dict[str, Any] | None) -> bool:
    """Minari's own test for the spaces it JPEG-encodes (minari.dataset.minari_storage)."""
    if not space or space.get("type") != "Box" or space.get("dtype") != "uint8":
        return False
    shape = space.get("shape", [])
    if len(shape) not in (2, 3) or shape[0] < 32 or shape[1] < 32:
        return False
    return bool(np.all(np.asarray(space["low"]) == 0) and np.all(np.asarray(space["high"]) == 255))


def _to_mtm_space(space: dict[str, Any]) -> dict[str, Any] | None:
    """One Minari leaf space as an mtm space dict; None for kinds mtm cannot describe."""
    from gymnasium import spaces as gym_spaces  # late: only Minari files with spaces need gymnasium

    kind = space.get("type")
    if kind == "Discrete":
        return space_to_dict(gym_spaces.Discrete(int(space["n"]), start=int(space.get("start", 0))))
    if kind != "Box":
        return None
    shape = tuple(int(x) for x in space["shape"])
    dtype = np.dtype(space["dtype"])
    low = np.broadcast_to(np.asarray(space["low"], dtype=np.float64), shape)
    high = np.broadcast_to(np.asarray(space["high"], dtype=np.float64), shape)
    if _is_image_space(space) and len(shape) == 2:  # grey images are read back as (H, W, 1)
        shape, low, high = shape + (1,), low[..., None], high[..., None]
    try:
        return space_to_dict(gym_spaces.Box(low=low.astype(dtype), high=high.astype(dtype),
                                            shape=shape, dtype=dtype))
    except (ValueError, TypeError):  # bounds gymnasium rejects: describe nothing rather than fail
        return None


def _observation_space(leaves: dict[str, dict[str, Any]], is_dict: bool) -> dict[str, Any] | None:
    converted = {key: _to_mtm_space(leaf) for key, leaf in leaves.items()}
    if not converted or any(v is None for v in converted.values()):
        return None
    return {"type": "Dict", "spaces": converted} if is_dict else converted[STATE_KEY]


def _env_id(spec: Any) -> str | None:
    return spec.get("id") if isinstance(spec, dict) else None


def decode_jpeg_frames(encoded: np.ndarray, where: str) -> np.ndarray:
    """Minari's per-frame JPEG bytes (an object array of 1-D uint8 arrays, or a 2-D uint8 array with one
    frame per row) decoded into one uint8 (N, H, W, C) array."""
    try:
        from PIL import Image, UnidentifiedImageError  # late: only JPEG image observations need Pillow
    except ImportError:
        raise DataError(f"{where}: images are JPEG-encoded; decoding them needs Pillow "
                        f"(pip install pillow)") from None

    def decode(i: int) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(np.ascontiguousarray(encoded[i]))) as img:
                frame = np.asarray(img, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError):
            raise DataError(f"{where}: frame {i} is not a decodable JPEG image") from None
        return frame[..., None] if frame.ndim == 2 else frame

    n = len(encoded)
    if n == 0:
        return np.empty((0, 0, 0, 0), np.uint8)
    first = decode(0)
    frames = np.empty((n,) + first.shape, dtype=np.uint8)  # filled in place: no list + stack copy
    frames[0] = first
    for i in range(1, n):
        frame = decode(i)
        if frame.shape != first.shape:
            raise DataError(f"{where}: frame {i} decodes to shape {frame.shape}, frame 0 to {first.shape}")
        frames[i] = frame
    return frames


def _is_vlen_bytes(ds: h5py.Dataset) -> bool:
    base = h5py.check_vlen_dtype(ds.dtype)
    return base is not None and np.dtype(base) == np.uint8


class MinariSource(GroupPerEpisode):
    """Read a Minari HDF5 dataset given its folder, its ``data/`` folder or its main_data.hdf5."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"{self.path}: no such file or directory")
        self.data_file, metadata_file = _locate(self.path)
        if metadata_file is None:
            raise DataError(f"{self.data_file.parent}: no {METADATA_FILE} next to {self.data_file.name} "
                            f"(or in the folder above); a Minari dataset needs it for its spaces and "
                            f"environment")
        meta = _read_metadata(metadata_file)
        data_format = meta.get("data_format", "hdf5")
        if data_format != "hdf5":
            raise DataError(f"{metadata_file}: dataset uses Minari's '{data_format}' storage; mtm reads only "
                            f"'hdf5' — re-create it with data_format='hdf5'")
        if not self.data_file.is_file():
            raise DataError(f"{self.data_file}: missing; a Minari dataset keeps its episodes in data/{MAIN_FILE}")

        obs_space = _parse_json_field(meta, "observation_space", metadata_file)
        act_space = _parse_json_field(meta, "action_space", metadata_file)
        self._obs_leaves = _leaf_spaces(obs_space)
        self._jpeg = bool(meta.get("jpeg_encoding", True))

        self._file = self._episodes_parent = open_hdf5(self.data_file)
        try:
            self._names = self._episode_names(meta.get("total_episodes"), metadata_file)
            if not self._names:
                raise DataError(f"{self.data_file}: holds no episodes")
            self.info = self._info(meta, obs_space, act_space, metadata_file)
        except BaseException:
            self.close()
            raise

    def _episode_names(self, total: Any, metadata_file: Path) -> list[str]:
        indexed = [(int(m.group(1)), k) for k in self._file if (m := EPISODE_RE.fullmatch(k))]
        # Numeric order: a lexical sort would put episode_10 before episode_2.
        names = [name for _, name in sorted(indexed)]
        if total is not None and int(total) != len(names):
            raise DataError(f"{metadata_file}: total_episodes is {total} but {self.data_file.name} holds "
                            f"{len(names)} episode groups; the dataset is incomplete or its files are from "
                            f"different datasets")
        return names

    def _info(self, meta: dict[str, Any], obs_space: Any, act_space: Any, metadata_file: Path) -> DatasetInfo:
        env_spec = _parse_json_field(meta, "env_spec", metadata_file)
        eval_spec = _parse_json_field(meta, "eval_env_spec", metadata_file)
        extra = {k: v for k, v in meta.items() if k not in _CONVERTED_METADATA}
        for key, spec in (("env_spec", env_spec), ("eval_env_spec", eval_spec)):
            if spec is not None:
                extra[key] = spec  # parsed, so that `extra` stays plain JSON rather than JSON-in-JSON
        is_dict = isinstance(obs_space, dict) and obs_space.get("type") in ("Dict", "Tuple")
        observation_space = _observation_space(self._obs_leaves, is_dict)
        action_space = _to_mtm_space(act_space) if act_space else None
        if observation_space is None and obs_space is not None:
            extra["minari_observation_space"] = obs_space  # kept verbatim when mtm cannot describe it
        if action_space is None and act_space is not None:
            extra["minari_action_space"] = act_space
        return DatasetInfo(
            source_format="minari",
            source=str(meta.get("dataset_id") or self.path),
            # Minari computes its reference scores on the evaluation env, so that is the one to use.
            env_id=_env_id(eval_spec) or _env_id(env_spec),
            ref_min_score=optional_float(meta.get("ref_min_score")),
            ref_max_score=optional_float(meta.get("ref_max_score")),
            observation_space=observation_space,
            action_space=action_space,
            extra=extra,
        )

    def episode_length(self, index: int) -> int:
        g = self._group(index)
        for key in ("actions", "terminations"):
            if isinstance(g.get(key), h5py.Dataset):
                return int(g[key].shape[0])
        return int(g.attrs.get("total_steps", 0))

    def observation_keys(self) -> list[str]:
        if not self._names:
            return []
        obs = self._group(0).get("observations")
        if isinstance(obs, h5py.Dataset):
            return [STATE_KEY]
        return list(datasets_under(obs)) if obs is not None else []

    def episode(self, index: int, keys: Collection[str] | None = None) -> Episode:
        g = self._group(index)
        name = self._names[index]
        where = f"{self.data_file} {name}"
        for key in ("observations", "terminations", "truncations"):
            if key not in g:
                raise DataError(f"{where}: missing '{key}'; a Minari episode has observations, "
                                f"actions, rewards, terminations and truncations (actions and rewards "
                                f"may be left out of an episode that lacks them)")
        if isinstance(g.get("actions"), h5py.Group):
            raise DataError(f"{where}: actions are a Dict/Tuple space; mtm needs a single Box or "
                            f"Discrete action array")
        observations = self._read_observations(g, where, keys)
        seed = g.attrs.get("seed")
        episode = Episode(
            observations=observations,
            actions=floats_to_float32(read_array(g, "actions", where)) if "actions" in g else None,
            rewards=read_array(g, "rewards", where).astype(np.float32) if "rewards" in g else None,
            terminations=read_array(g, "terminations", where).astype(bool),
            truncations=read_array(g, "truncations", where).astype(bool),
            seed=None if seed is None else int(seed),
            source_id=name,
        )
        t = episode.length
        for key, arr in observations.items():
            if arr.shape[0] != t + 1:
                # Minari always stores the reset observation plus one per step; anything else is a
                # broken file (the classic lost-final-observation bug), not a shorter convention.
                raise DataError(f"{where}: observations '{key}' has {arr.shape[0]} rows for {t} "
                                f"actions; Minari episodes have T+1 = {t + 1}")
        return self._checked(episode, index, where)

    def _read_observations(self, g: h5py.Group, where: str, keys: Collection[str] | None) -> dict[str, np.ndarray]:
        node = g["observations"]
        datasets = {STATE_KEY: node} if isinstance(node, h5py.Dataset) else datasets_under(node)
        if not datasets:
            raise DataError(f"{where}: 'observations' is an empty group")
        return {key: self._read_leaf(datasets[key], key, f"{where} observations/{key}")
                for key in select_keys(list(datasets), keys, where)}

    def _read_leaf(self, ds: h5py.Dataset, key: str, where: str) -> np.ndarray:
        space = self._obs_leaves.get(key)
        image = _is_image_space(space)
        stored = read_array(ds.parent, ds.name.rsplit("/", 1)[-1], where)
        # Encoded frames either have a variable-length dtype or a row shape unlike the space's.
        if _is_vlen_bytes(ds) or (image and self._jpeg and tuple(stored.shape[1:]) != tuple(space["shape"])):
            frames = decode_jpeg_frames(stored, where)
            if space is not None and frames.shape[1:3] != tuple(space["shape"][:2]):
                raise DataError(f"{where}: frames decode to {frames.shape[1:]}, the observation "
                                f"space says {tuple(space['shape'])}")
            return frames
        if stored.dtype.kind not in "biuf":
            raise DataError(f"{where}: holds {stored.dtype} data; mtm needs numeric observations")
        if image and stored.ndim == 3:
            return stored[..., None]  # grey (T+1, H, W) -> HWC with one channel
        return floats_to_float32(stored)

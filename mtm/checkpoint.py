"""Checkpoints: a directory that alone rebuilds the model, written atomically, loaded without pickle.

    run_dir/checkpoints/
        last                        name of the newest complete checkpoint, e.g. "step_00005000"
        step_00005000/
            model.safetensors       the weights
            config.json             the resolved run config
            metadata.json           format, step, versions, time, and what the caller adds: for
                                    `mtm train`, its RunMetadata (mtm.run_metadata lists every key
                                    and the code that reads it)
            train_state/            only needed to resume
                tensors.safetensors every tensor of the training state (optimiser moments, RNG)
                state.json          the rest of its structure; tensors appear as references

A checkpoint is built in a temp folder next to its final place, fsynced, and renamed into place;
then `last` is replaced atomically and old checkpoints are pruned. A crash at any moment therefore
leaves the previous checkpoint and `last` intact; the temp folder it leaves behind is ignored by
loading and removed by the next save. One process writes a run's checkpoints (rank 0 under
torchrun): a save removes every temp folder it finds.

The training state is JSON + safetensors rather than ``torch.save``: loading a file then cannot run
code at all (``torch.load(weights_only=True)`` is still an unpickler and has had escapes, e.g.
CVE-2025-32434), and every part can be read with ordinary tools. The JSON encoding keeps what an
optimiser's state dict relies on — integer keys, tuples vs lists, exact floats — so state dicts
round-trip exactly (see `_encode`).
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import random
import re
import shutil
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from safetensors import SafetensorError

from mtm.version import __version__
from mtm.errors import DataError
from mtm.io import atomic_write_text, fsync_dir, is_atomic_temp, short_reason
from mtm.run_metadata import HEADER_KEYS, RunMetadata

FORMAT = "mtm-checkpoint"
FORMAT_VERSION = 1

CHECKPOINTS_DIR = "checkpoints"
LAST_FILE = "last"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
TRAIN_STATE_DIR = "train_state"
TRAIN_TENSORS_FILE = "tensors.safetensors"
TRAIN_STRUCTURE_FILE = "state.json"

_TMP_PREFIX = ".tmp-"  # in-progress saves and folders being deleted; never loaded
_STEP_DIR = re.compile(r"^step_(\d+)$")
_RESERVED_METADATA = HEADER_KEYS


# ---- Saving --------------------------------------------------------------------------------------


def step_name(step: int) -> str:
    """The name of step `step`'s checkpoint folder, "step_00005000" (and of what else a run writes
    per step, e.g. its evaluation videos), sorted by step as text too."""
    return f"step_{step:08d}"


def step_dir(run_dir: str | os.PathLike, step: int) -> Path:
    """Where a run's checkpoint of step `step` is (or would be) saved."""
    return Path(run_dir) / CHECKPOINTS_DIR / step_name(step)


def save_checkpoint(run_dir: str | os.PathLike, step: int, *, model_state: Mapping[str, torch.Tensor],
                    config: Mapping[str, Any], metadata: Mapping[str, Any],
                    train_state: Mapping[str, Any] | None = None, keep_last: int = 3) -> Path:
    """Write ``run_dir/checkpoints/step_{step:08d}/`` atomically, point `last` at it, prune old ones.

    `config` and `metadata` must be JSON-able; `train_state` may nest dicts (any hashable keys),
    lists, tuples, tensors, numpy arrays and JSON scalars. `keep_last` = 0 keeps every checkpoint.
    Saving a step that already exists replaces it. Returns the checkpoint's path.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    if keep_last < 0:
        raise ValueError(f"keep_last must be >= 0 (0 keeps all), got {keep_last}")
    clash = _RESERVED_METADATA & set(metadata)
    if clash:
        raise ValueError(f"metadata keys {sorted(clash)} are set by save_checkpoint itself")

    root = Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    _remove_temps(root)  # left by a save or prune that was killed
    name = step_name(step)
    final = root / name
    # Not tempfile.mkdtemp: its 0700 mode would stay on the checkpoint; os.mkdir honours the umask.
    tmp = root / f"{_TMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    old = None
    try:
        _write_checkpoint_files(tmp, step, model_state, config, metadata, train_state)
        if final.exists():
            # Re-saving a step: rename cannot replace a non-empty folder, so move the old copy
            # aside first. A half-written folder is never visible under the final name, but for the
            # instant between the two renames the step is absent (the one non-atomic case).
            old = root / f"{_TMP_PREFIX}old-{name}-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        # The old copy goes back under its name if the new one did not get there: under a temp
        # name the next save's clean-up would delete it, and `last` may name this step.
        if old is not None and old.exists() and not final.exists():
            os.rename(old, final)
        raise
    atomic_write_text(root / LAST_FILE, name + "\n")
    _prune(root, keep_last, protect=name)
    return final


def _write_checkpoint_files(folder: Path, step: int, model_state: Mapping[str, torch.Tensor],
                            config: Mapping[str, Any], metadata: Mapping[str, Any],
                            train_state: Mapping[str, Any] | None) -> None:
    for key, value in model_state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise TypeError(f"model_state must map str to Tensor; {key!r} holds a {type(value).__name__}")
    _save_tensors(dict(model_state), folder / MODEL_FILE)
    _write_json(folder / CONFIG_FILE, dict(config))
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": step,
              "mtm_version": __version__, "torch_version": torch.__version__,
              "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    _write_json(folder / METADATA_FILE, {**header, **metadata})
    if train_state is not None:
        sub = folder / TRAIN_STATE_DIR
        sub.mkdir()
        tensors: dict[str, torch.Tensor] = {}
        structure = _encode(dict(train_state), "", tensors)
        _save_tensors(tensors, sub / TRAIN_TENSORS_FILE)
        _write_json(sub / TRAIN_STRUCTURE_FILE, structure)
        fsync_dir(sub)
    fsync_dir(folder)


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors refuses non-contiguous tensors and tensors sharing memory (tied weights):
    store each as its own contiguous CPU copy. Loading gives independent tensors with equal values,
    which is what `load_state_dict` copies into tied parameters anyway."""
    prepared: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for key, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if t.numel() > 0:
            ptr = t.untyped_storage().data_ptr()
            if ptr in storages:
                t = t.clone()
                ptr = t.untyped_storage().data_ptr()
            storages.add(ptr)
        prepared[key] = t
    safetensors.torch.save_file(prepared, str(path), metadata={"format": "pt"})
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2)  # TypeError here means the caller passed a non-JSON value
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _step_dirs(root: Path) -> list[tuple[int, Path]]:
    found = []
    for entry in root.iterdir() if root.is_dir() else ():
        m = _STEP_DIR.match(entry.name)
        if m and entry.is_dir():
            found.append((int(m.group(1)), entry))
    return sorted(found)


def _prune(root: Path, keep_last: int, protect: str) -> None:
    """Delete all but the `keep_last` highest steps, never the one `last` names.

    Each victim is renamed to a temp name before deletion, so a kill halfway through leaves a
    folder that looks like a temp (cleaned later), never a half-deleted checkpoint.
    """
    if keep_last == 0:
        return
    for _, path in _step_dirs(root)[:-keep_last]:
        if path.name == protect:
            continue
        doomed = root / f"{_TMP_PREFIX}del-{path.name}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(path, doomed)
        except OSError as exc:  # the new checkpoint is safe; a leftover old one must not stop training
            warnings.warn(f"could not remove old checkpoint {path}: {exc}", stacklevel=3)
            continue
        shutil.rmtree(doomed, ignore_errors=True)


def _remove_temps(root: Path) -> None:
    for entry in root.iterdir():
        if entry.name.startswith(_TMP_PREFIX) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        elif is_atomic_temp(entry.name, of=LAST_FILE):
            entry.unlink(missing_ok=True)  # from atomic_write_text of `last`


# ---- Loading -------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A loaded checkpoint. Weights, config and metadata are read eagerly; training state on demand."""

    path: Path
    step: int
    model_state: dict[str, torch.Tensor] = field(repr=False)
    config: dict[str, Any] = field(repr=False)
    metadata: dict[str, Any] = field(repr=False)

    @functools.cached_property
    def run_metadata(self) -> RunMetadata:
        """`metadata` typed, as `mtm train` wrote it (any mtm version)."""
        return RunMetadata.from_dict(self.metadata)

    @property
    def has_train_state(self) -> bool:
        return (self.path / TRAIN_STATE_DIR).is_dir()

    def load_train_state(self, device: str | torch.device = "cpu") -> dict[str, Any]:
        """The `train_state` given to `save_checkpoint`, tensors on `device` (numpy arrays stay numpy).

        "cpu" is the usual choice: `Optimizer.load_state_dict` moves state to its parameters' device.
        """
        folder = self.path / TRAIN_STATE_DIR
        if not folder.is_dir():
            raise DataError(
                f"{self.path}: checkpoint has no {TRAIN_STATE_DIR}/ (saved without training state); "
                "cannot resume from it"
            )
        structure = _read_json(folder / TRAIN_STRUCTURE_FILE)
        tensors = _load_tensors(folder / TRAIN_TENSORS_FILE)
        return _decode(structure, tensors, torch.device(device), folder / TRAIN_STRUCTURE_FILE)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a checkpoint folder, or the one `last` names in a run folder or its checkpoints/ folder."""
    folder = resolve_checkpoint(path)
    for required in (MODEL_FILE, METADATA_FILE, CONFIG_FILE):
        if not (folder / required).is_file():
            raise DataError(f"{folder}: not an mtm checkpoint (missing {required})")
    metadata = _read_json(folder / METADATA_FILE)
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise DataError(f'{folder / METADATA_FILE}: not an mtm checkpoint (no "format": "{FORMAT}")')
    version = metadata.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise DataError(f'{folder / METADATA_FILE}: missing or invalid "format_version"')
    if version > FORMAT_VERSION:
        raise DataError(
            f"{folder}: checkpoint format version {version!r} is newer than this mtm supports ({FORMAT_VERSION}); "
            "upgrade mtm"
        )
    step = metadata.get("step")
    if isinstance(step, bool) or not isinstance(step, int):
        raise DataError(f'{folder / METADATA_FILE}: missing or invalid "step"')
    config = _read_json(folder / CONFIG_FILE)
    if not isinstance(config, dict):
        raise DataError(f"{folder / CONFIG_FILE}: expected a JSON object")
    model_state = _load_tensors(folder / MODEL_FILE)
    return Checkpoint(path=folder, step=step, model_state=model_state, config=config, metadata=metadata)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint folder `path` means: itself, or what `last` names in it or in its checkpoints/."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such checkpoint or run directory")
    if not p.is_dir():
        raise DataError(f"{p}: not a directory; give a checkpoint folder, a run directory or its checkpoints/ folder")
    if any((p / f).exists() for f in (MODEL_FILE, METADATA_FILE, CONFIG_FILE)):
        return p  # a checkpoint folder (load_checkpoint reports whatever is missing in it)
    if (p / CHECKPOINTS_DIR).is_dir():
        p = p / CHECKPOINTS_DIR
    last = p / LAST_FILE
    if not last.is_file():
        if p.name == CHECKPOINTS_DIR:
            raise DataError(f"{p}: no checkpoint saved yet (missing {LAST_FILE})")
        raise DataError(f"{p}: not an mtm checkpoint (missing {MODEL_FILE})")
    try:
        name = last.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{last}: unreadable ({exc})") from None
    if not _STEP_DIR.match(name):
        raise DataError(f"{last}: corrupt, expected a name like step_00005000, found {name[:40]!r}")
    if not (p / name).is_dir():
        raise DataError(f"{last}: names {name}, which does not exist")
    return p / name


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path.parent}: not an mtm checkpoint (missing {path.name})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: corrupt JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise DataError(f"{path.parent}: not an mtm checkpoint (missing {path.name})")
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"{path}: corrupt safetensors file ({short_reason(exc)})") from None


# ---- Training state <-> JSON + tensors -----------------------------------------------------------
#
# JSON has only str-keyed objects and arrays, so the encoding marks what it cannot say directly with
# one-key objects: {"__tensor__": name}, {"__ndarray__": name}, {"__tuple__": [...]} and
# {"__dict__": [[key, value], ...]} (for non-str keys, e.g. an optimiser's parameter indices).
# Python floats round-trip exactly through JSON (repr is shortest-exact; nan/inf as NaN/Infinity).

_TENSOR, _NDARRAY, _TUPLE, _DICT = "__tensor__", "__ndarray__", "__tuple__", "__dict__"
_MARKERS = {_TENSOR, _NDARRAY, _TUPLE, _DICT}


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        return {_TENSOR: _tensor_slot(path, tensors, obj)}
    if isinstance(obj, np.ndarray):
        return {_NDARRAY: _tensor_slot(path, tensors, torch.from_numpy(np.ascontiguousarray(obj)))}
    if isinstance(obj, np.generic):  # numpy scalars come back as the equivalent Python number
        return _encode(obj.item(), path, tensors)
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) for k in obj) and not (_MARKERS & obj.keys()):
            return {k: _encode(v, f"{path}.{k}", tensors) for k, v in obj.items()}
        pairs = [[_encode(k, f"{path}.key", tensors), _encode(v, f"{path}.{k}", tensors)] for k, v in obj.items()]
        return {_DICT: pairs}
    raise TypeError(
        f"train_state{path}: cannot save a {type(obj).__name__} "
        "(use tensors, arrays, numbers, str, lists, tuples, dicts)"
    )


def _tensor_slot(path: str, tensors: dict[str, torch.Tensor], tensor: torch.Tensor) -> str:
    # Names follow the structure (e.g. "optimizer.state.0.exp_avg") so the file is readable alone.
    name = path.lstrip(".") or "root"
    base, n = name, 1
    while name in tensors:  # int key 0 and str key "0" would collide
        name, n = f"{base}#{n}", n + 1
    tensors[name] = tensor
    return name


def _decode(obj: Any, tensors: dict[str, torch.Tensor], device: torch.device, source: Path) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors, device, source) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        ((key, value),) = obj.items()
        if key in (_TENSOR, _NDARRAY):
            if value not in tensors:
                raise DataError(f"{source}: refers to tensor {value!r}, missing from {TRAIN_TENSORS_FILE}")
            return tensors[value].to(device) if key == _TENSOR else tensors[value].numpy()
        if key == _TUPLE:
            return tuple(_decode(v, tensors, device, source) for v in value)
        if key == _DICT:
            return {_decode(k, tensors, device, source): _decode(v, tensors, device, source) for k, v in value}
    return {k: _decode(v, tensors, device, source) for k, v in obj.items()}


# ---- Random number generators --------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """The state of every global RNG training touches: python, numpy, torch CPU, and CUDA in use."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    # Only when CUDA is already initialised: querying it otherwise would start a CUDA context
    # (slow, and fatal in forked workers) for a generator nothing has used.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of `capture_rng_state`; parts that are absent, or CUDA without a GPU, are skipped."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        np.random.set_state(tuple(state["numpy"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        # Resuming on fewer GPUs restores the ones present; on a CPU-only machine there is nothing.
        for index, gen_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(gen_state.cpu(), index)

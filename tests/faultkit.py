"""Tools for the fault tests: bad datasets, a disk that fills up, a read-only folder, kill -9, and
checks of what a command leaves behind.

- WRITERS / edit(): a small valid dataset in every format, broken one way at a time (MALFORMATIONS).
- FullDisk: a fault-injecting write wrapper for this process: from its k-th write on, every write
  mtm makes fails with ENOSPC.
- run_mtm(file_size_limit=...): a command in a fresh process under a file-size limit (RLIMIT_FSIZE,
  SIGXFSZ ignored), so that every write past the limit fails with EFBIG inside the kernel, whichever
  layer writes (Python, HDF5's C code, safetensors' Rust): a full disk that needs no privileges.
- tmpfs(): where mounting is allowed (root in a VM), a tiny file system that says ENOSPC for real,
  or a read-only one; tests that need it are skipped elsewhere.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import pytest

from mtm.io import is_atomic_temp

REPO = Path(__file__).resolve().parents[1]
LOCK_FILE = ".lock"  # mtm.training.rundir.LOCK_FILE: the only file whose bytes may change


def mtm_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
            "PYTHONUNBUFFERED": "1"}


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # inherited across exec: writes fail with EFBIG
    return apply


def run_mtm(*args, file_size_limit: int | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m mtm ARGS` in a fresh process, optionally under a file-size limit."""
    return subprocess.run([sys.executable, "-m", "mtm", *map(str, args)], cwd=REPO, env=mtm_env(),
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_limit_file_size(file_size_limit) if file_size_limit else None)


def error_line(result) -> str:
    """The one `error:` line a failed command printed on stderr, asserting exit status 1, exactly one
    such line (`warning:` lines aside) and no traceback anywhere. `result`: a click Result or a
    CompletedProcess."""
    if isinstance(result, subprocess.CompletedProcess):
        code, out, err = result.returncode, result.stdout, result.stderr
    else:
        code, out, err = result.exit_code, result.stdout, result.stderr
    shown = (out + err)[-3000:]
    assert code == 1, shown
    assert "Traceback" not in out + err, shown
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (or the file itself) with its bytes; a run's lock file aside."""
    if folder.is_file():
        return {folder.name: folder.read_bytes()}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


def leftovers(folder: Path) -> list[str]:
    """Half-written things that must never stay behind: partial files, temp files and temp folders."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.name.endswith(".partial") or is_atomic_temp(p.name) or p.name.startswith(".tmp-"))


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tiny tmpfs at `path`; the test is skipped where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
    except OSError:
        proc = None
    if proc is None or proc.returncode != 0:
        pytest.skip("mounting a tmpfs needs privileges this machine does not give")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount_read_only(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)


# --------------------------------------------------------------------------------------------------
# Small valid datasets in every format, and the ways to break them
# --------------------------------------------------------------------------------------------------
#
# Each `write_*` writes three episodes (lengths 5, 4, 6; states of 3 numbers, actions of 2) and
# returns the path a user would give. Each malformation edits one such dataset in place through
# `edit(fmt, path, what)`, touching the same thing in every format where the format has it.

LENGTHS = (5, 4, 6)
STATE, ACTION = 3, 2


def _episode_arrays(i: int, t: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(i)
    return {"obs": rng.normal(size=(t + 1, STATE)).astype(np.float32),
            "actions": rng.uniform(-1, 1, size=(t, ACTION)).astype(np.float32),
            "rewards": rng.normal(size=t).astype(np.float32)}


def write_d4rl(path: Path) -> Path:
    eps = [_episode_arrays(i, t) for i, t in enumerate(LENGTHS)]
    with h5py.File(path, "w") as f:
        f["observations"] = np.concatenate([e["obs"][:-1] for e in eps])
        f["next_observations"] = np.concatenate([e["obs"][1:] for e in eps])
        f["actions"] = np.concatenate([e["actions"] for e in eps])
        f["rewards"] = np.concatenate([e["rewards"] for e in eps])
        ends = np.concatenate([np.eye(1, t, t - 1, dtype=bool)[0] for t in LENGTHS])
        f["terminals"] = ends
        f["timeouts"] = np.zeros_like(ends)
        f["metadata/env_id"] = "Hopper-v5"
    return path


def write_native(path: Path) -> Path:
    from mtm.data.episode import STATE_KEY, DatasetInfo, Episode
    from mtm.data.formats.native import EpisodeWriter

    with EpisodeWriter(path, DatasetInfo(source_format="native", source="faultkit", env_id="Hopper-v5")) as w:
        for i, t in enumerate(LENGTHS):
            e = _episode_arrays(i, t)
            done = np.eye(1, t, t - 1, dtype=bool)[0]
            w.add(Episode({STATE_KEY: e["obs"]}, e["actions"], e["rewards"], done, np.zeros(t, bool), seed=i))
    return path


def write_minari(root: Path) -> Path:
    data = root / "data"
    data.mkdir(parents=True)
    box = lambda n: json.dumps({"type": "Box", "dtype": "float32", "shape": [n],  # noqa: E731
                                "low": [-1e9] * n, "high": [1e9] * n})
    (data / "metadata.json").write_text(json.dumps(
        {"dataset_id": "faultkit/tiny-v0", "total_episodes": len(LENGTHS), "total_steps": sum(LENGTHS),
         "data_format": "hdf5", "observation_space": box(STATE), "action_space": box(ACTION)}))
    with h5py.File(data / "main_data.hdf5", "w") as f:
        for i, t in enumerate(LENGTHS):
            e = _episode_arrays(i, t)
            g = f.create_group(f"episode_{i}")
            g["observations"], g["actions"], g["rewards"] = e["obs"], e["actions"], e["rewards"].astype(np.float64)
            g["terminations"] = np.eye(1, t, t - 1, dtype=bool)[0]
            g["truncations"] = np.zeros(t, bool)
    return root


def write_robomimic(path: Path) -> Path:
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1, "env_kwargs": {}})
        data.attrs["total"] = sum(LENGTHS)
        for i, t in enumerate(LENGTHS):
            e = _episode_arrays(i, t)
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = t
            g["obs/state"], g["next_obs/state"] = e["obs"][:-1], e["obs"][1:]
            g["actions"], g["rewards"] = e["actions"], e["rewards"]
            g["dones"] = np.eye(1, t, t - 1, dtype=np.int64)[0]
    return path


WRITERS = {"d4rl": write_d4rl, "native": write_native, "minari": write_minari, "robomimic": write_robomimic}


def hdf5_file(fmt: str, path: Path) -> Path:
    """The HDF5 file inside a dataset (a Minari dataset is a folder)."""
    return path / "data" / "main_data.hdf5" if fmt == "minari" else path


def _episodes(fmt: str, f: h5py.File) -> list[h5py.Group]:
    if fmt == "native":
        return [f["episodes"][k] for k in sorted(f["episodes"])]
    if fmt == "minari":
        return [f[f"episode_{i}"] for i in range(len(LENGTHS))]
    return [f["data"][f"demo_{i}"] for i in range(len(LENGTHS))]


_NAMES = {  # what each format calls the arrays a malformation touches
    "native": {"obs": "observations/state", "actions": "actions", "rewards": "rewards"},
    "minari": {"obs": "observations", "actions": "actions", "rewards": "rewards"},
    "robomimic": {"obs": "obs/state", "actions": "actions", "rewards": "rewards"},
    "d4rl": {"obs": "observations", "actions": "actions", "rewards": "rewards"},
}


def _replace(group, name: str, value) -> None:
    del group[name]
    group[name] = value


def edit(fmt: str, path: Path, what: str) -> None:
    """Break a dataset written by WRITERS[fmt] in one way (see MALFORMATIONS)."""
    file = hdf5_file(fmt, path)
    if what == "missing":
        import shutil

        shutil.rmtree(path) if path.is_dir() else path.unlink()
        return
    if what == "not-hdf5":
        file.write_text("observations,actions,rewards\n1,2,3\n")
        return
    if what == "truncated":
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
        return
    names = _NAMES[fmt]
    with h5py.File(file, "a") as f:
        if fmt == "d4rl":
            _edit_flat(f, what, names)
            return
        eps = _episodes(fmt, f)
        ep = eps[1]  # damage the middle episode: the first one reads fine
        if what == "no-episodes":
            for g in eps:
                del f[g.name]
            if fmt == "native":
                f.attrs["num_episodes"] = 0
            if fmt == "minari":
                meta = path / "data" / "metadata.json"
                meta.write_text(json.dumps({**json.loads(meta.read_text()), "total_episodes": 0}))
        elif what == "no-terminations":  # (an episode may lack actions or rewards: that is no fault)
            del ep["dones" if fmt == "robomimic" else "terminations"]
        elif what == "short-rewards":
            _replace(ep, names["rewards"], ep[names["rewards"]][:-1])
        elif what == "nan-state":
            arr = ep[names["obs"]][()]
            arr[2, 1] = np.nan
            _replace(ep, names["obs"], arr)
        elif what == "inf-action":
            arr = ep[names["actions"]][()]
            arr[1, 0] = np.inf
            _replace(ep, names["actions"], arr)
        elif what == "state-size":
            arr = ep[names["obs"]][()]
            _replace(ep, names["obs"], arr[:, :2])
            if fmt == "robomimic":
                _replace(ep, "next_obs/state", ep["next_obs/state"][()][:, :2])
        elif what == "text-state":
            rows = ep[names["obs"]].shape[0]
            _replace(ep, names["obs"], np.full((rows, STATE), b"x"))
            if fmt == "robomimic":
                _replace(ep, "next_obs/state", np.full((rows, STATE), b"x"))
        elif what == "zero-steps":
            for key in (names["actions"], names["rewards"]) + (("terminations", "truncations") if fmt != "robomimic" else ("dones",)):
                _replace(ep, key, ep[key][()][:0])
            _replace(ep, names["obs"], ep[names["obs"]][()][:1] if fmt != "robomimic" else ep[names["obs"]][()][:0])
            if fmt == "robomimic":
                _replace(ep, "next_obs/state", ep["next_obs/state"][()][:0])
                ep.attrs["num_samples"] = 0
        elif what == "bad-metadata":
            if fmt == "native":
                f.attrs["schema_version"] = 99
            elif fmt == "robomimic":
                f["data"].attrs["env_args"] = "{not json"
            else:
                (path / "data" / "metadata.json").write_text("{not json")
        else:
            raise ValueError(what)


def _edit_flat(f: h5py.File, what: str, names: dict) -> None:
    """The D4RL version of each malformation: one flat array per quantity, episodes cut by flags."""
    if what == "no-episodes":
        for key in ("observations", "next_observations", "actions", "rewards", "terminals", "timeouts"):
            _replace(f, key, f[key][()][:0])
    elif what == "no-terminations":
        del f["terminals"]
    elif what == "short-rewards":
        _replace(f, "rewards", f["rewards"][()][:-1])
    elif what == "nan-state":
        arr = f["observations"][()]
        arr[7, 1] = np.nan
        _replace(f, "observations", arr)
    elif what == "inf-action":
        arr = f["actions"][()]
        arr[6, 0] = np.inf
        _replace(f, "actions", arr)
    elif what == "state-size":  # one array per quantity: the closest is a next-state of another size
        _replace(f, "next_observations", f["next_observations"][()][:, :2])
    elif what == "text-state":
        _replace(f, "observations", np.full((f["observations"].shape[0], STATE), b"x"))
    elif what == "zero-steps":  # D4RL has no empty episodes; the closest is a state without a width
        _replace(f, "observations", f["observations"][()][:, 0])
    elif what == "bad-metadata":
        _replace(f, "terminals", np.array([b"yes"] * f["terminals"].shape[0]))
    else:
        raise ValueError(what)


MALFORMATIONS = ("missing", "not-hdf5", "truncated", "no-episodes", "no-terminations", "short-rewards", "nan-state",
                 "inf-action", "state-size", "text-state", "zero-steps", "bad-metadata")


# --------------------------------------------------------------------------------------------------
# A disk that fills up, in this process
# --------------------------------------------------------------------------------------------------


class FullDisk:
    """A fault-injecting write wrapper: from the `fail_at`-th write on, every write mtm makes fails
    with ENOSPC, as on a disk that has just filled up (None: count only, never fail).

    Writes are mtm's durable-output calls: every system write under an HDF5 output
    (DeferredFailureFile), safetensors files, checkpoint JSON, atomic text files (config.yaml,
    `last`, reports) and metrics rows. They fail the way the real thing does: OSError(ENOSPC), and
    safetensors' own error for safetensors files.
    """

    def __init__(self, monkeypatch, fail_at: int | None = None) -> None:
        import safetensors.torch
        from safetensors import SafetensorError

        import mtm.checkpoint
        import mtm.config.loader
        import mtm.io
        import mtm.training.metrics

        self.fail_at = fail_at
        self.count = 0
        self.failed = 0

        def guard(make_error=None):
            def check() -> None:
                self.count += 1
                if self.fail_at is not None and self.count >= self.fail_at:
                    self.failed += 1
                    raise (make_error or _enospc)()
            return check

        def wrap(owner, name: str, check) -> None:
            original = getattr(owner, name)

            def wrapper(*args, **kwargs):
                check()
                return original(*args, **kwargs)

            monkeypatch.setattr(owner, name, wrapper)

        plain = guard()
        wrap(mtm.io.DeferredFailureFile, "_write_some", plain)
        wrap(safetensors.torch, "save_file", guard(lambda: SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)")))
        wrap(mtm.checkpoint, "_write_json", plain)
        for module in (mtm.io, mtm.config.loader, mtm.checkpoint, mtm.training.metrics):
            wrap(module, "atomic_write_text", plain)
        wrap(mtm.training.metrics.Logger, "scalars", plain)


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# --------------------------------------------------------------------------------------------------
# How many cases the fault tests tried (printed at the end of the session by conftest.py)
# --------------------------------------------------------------------------------------------------

TRIED: dict[str, int] = {}


def tried(kind: str, n: int = 1) -> None:
    TRIED[kind] = TRIED.get(kind, 0) + n

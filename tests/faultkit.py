"""Tools for the fault tests: running mtm against a full disk, a read-only folder or a kill -9, and
checking what it leaves behind.

A full disk without mount privileges: a process's file-size limit (RLIMIT_FSIZE, with SIGXFSZ
ignored) makes every write past the limit fail with EFBIG inside the kernel, whichever layer
writes (Python, HDF5's C code, safetensors' Rust), exactly where ENOSPC would fail on a full disk.
Where mounting is allowed (root in a VM), `tmpfs` gives the real thing: a tiny file system that
says ENOSPC, or a read-only one.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

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


def error_line(output: str, exit_code: int) -> str:
    """The one `error:` line a failed command prints (asserting there is exactly one, no traceback)."""
    lines = [line for line in output.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert exit_code == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), output[-3000:]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (or the file itself) with its bytes; a run's lock file aside."""
    if folder.is_file():
        return {folder.name: folder.read_bytes()}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_FILE}


def leftovers(folder: Path) -> list[str]:
    """Half-written things that must never stay behind: partial files and temp folders."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.name.endswith(".partial") or ".partial." in p.name or p.name.startswith(".tmp-"))


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

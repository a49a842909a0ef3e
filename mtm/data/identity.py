"""Dataset identity: which bytes a model was trained on.

Checkpoints record the resolved path, size and SHA-256 of their dataset, so that a resume, an
evaluation or a results table can tell whether the data changed since training started. The hash
is always over the full content (speed: BENCHMARKS.md, Data loading): training reads the whole
dataset anyway, and a size + mtime shortcut would miss a file rewritten in place with its timestamp
kept (cp -p, rsync -t, tar x), exactly the change a content hash exists to catch.

A file's hash equals ``sha256sum FILE``. A directory (a Minari dataset) hashes the manifest of its
files in sorted order, one ``<sha256 of file>  <relative/posix/path>\\n`` line each, so renaming,
adding or removing a file changes the identity too. Hidden files and folders are not data: skipped.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from mtm.errors import DataError

CHUNK_BYTES = 1 << 20  # 1 MiB: measured fastest of 1/4/8 MiB


def dataset_identity(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "kind": "file"|"directory", "size", "sha256"}`` (+ ``"files"`` for a directory)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or directory")
    resolved = p.resolve()
    if resolved.is_file():
        digest, size = _hash_file(resolved)
        return {"path": str(resolved), "kind": "file", "size": size, "sha256": digest}

    files = {f.relative_to(resolved).as_posix(): f for f in resolved.rglob("*") if f.is_file()}
    names = sorted(name for name in files if not any(part.startswith(".") for part in name.split("/")))
    if not names:
        raise DataError(f"{p}: directory contains no files")
    manifest = hashlib.sha256()
    total = 0
    for name in names:
        digest, size = _hash_file(files[name])
        total += size
        manifest.update(f"{digest}  {name}\n".encode())
    return {"path": str(resolved), "kind": "directory", "size": total, "files": len(names),
            "sha256": manifest.hexdigest()}


def _hash_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    buf = bytearray(CHUNK_BYTES)
    view = memoryview(buf)
    try:
        with open(path, "rb", buffering=0) as fh:  # unbuffered: readinto fills our buffer directly
            while n := fh.readinto(buf):
                h.update(view[:n])
                size += n
    except OSError as exc:
        raise DataError(f"{path}: cannot read dataset file ({exc.strerror or exc})") from None
    return h.hexdigest(), size

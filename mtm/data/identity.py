"""Dataset identity: which bytes a model was trained on.

Checkpoints record the resolved path, size and SHA-256 of their dataset, so that a resume, an
evaluation or a results table can tell whether the data changed since training started.

The hash is always over the full content. On a CPU with SHA extensions it runs at ~1.5 GB/s from
the page cache (14 MB hopper-medium-v5: 9 ms; 1 GB: ~0.7 s), otherwise at the speed of the disk.
mtm reads the whole dataset at the start of training anyway, so hashing at most doubles an I/O that
is already paid and warms the page cache for the read that follows. A size + mtime shortcut would
miss a file rewritten in place with its timestamp kept (cp -p, rsync -t, tar x): exactly the change
a content hash exists to catch.

A single file's hash equals ``sha256sum FILE``. A directory (a Minari dataset) hashes the manifest
of its files in sorted order, one ``<sha256 of file>  <relative/posix/path>\\n`` line each (the
``sha256sum`` line format), so renaming, adding or removing a file changes the identity too.
Hidden files and folders (``.DS_Store``, ``.cache/``) are skipped: they are not data.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from mtm.errors import DataError

CHUNK_BYTES = 1 << 20  # 1 MiB: measured fastest of 1/4/8 MiB; large enough to amortise syscalls


def dataset_identity(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "kind": "file"|"directory", "size", "sha256"}`` (+ ``"files"`` for a directory)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or directory")
    resolved = p.resolve()
    if resolved.is_file():
        digest, size = _hash_file(resolved)
        return {"path": str(resolved), "kind": "file", "size": size, "sha256": digest}

    files = sorted(
        (f for f in resolved.rglob("*") if f.is_file() and not _hidden(f.relative_to(resolved))),
        key=lambda f: f.relative_to(resolved).as_posix(),
    )
    if not files:
        raise DataError(f"{p}: directory contains no files")
    manifest = hashlib.sha256()
    total = 0
    for f in files:
        digest, size = _hash_file(f)
        total += size
        manifest.update(f"{digest}  {f.relative_to(resolved).as_posix()}\n".encode())
    return {
        "path": str(resolved),
        "kind": "directory",
        "size": total,
        "files": len(files),
        "sha256": manifest.hexdigest(),
    }


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


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)

"""Writing outputs: one-line errors for the ways a disk says no, and locks that die with their process.

Every command that writes (collect, convert, train, eval) fails the same way when the file system
refuses: one `error:` line naming the path and the reason, exit 1, the partial output removed and
any older output untouched. `write_failure` recognises such failures, whichever layer raised them:
Python's OSError, h5py's OSError/RuntimeError (which carry the errno inside their message) and
safetensors' errors (a Rust io::Error in the message).

Locks are `flock(2)` locks on an open file: the kernel drops them when the process ends, however it
ends, so a `kill -9` never leaves a stale lock behind. (Where `fcntl` does not exist, locking is a
no-op.)
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from mtm.errors import OutputError

try:
    import fcntl
except ImportError:  # Windows: no flock; one writer per output is then the user's responsibility
    fcntl = None  # type: ignore[assignment]

# errno -> (reason, what to do). Only failures of the environment are listed: these are the user's
# to fix, never a bug in mtm.
_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: ("no space left on device", "free some space or write elsewhere"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write elsewhere"),
    errno.EFBIG: ("file too large (a file-size limit was reached)", "write elsewhere or raise the limit"),
    errno.EROFS: ("read-only file system", "choose a folder you can write to"),
    errno.EACCES: ("permission denied", "choose a folder you can write to"),
    errno.EPERM: ("operation not permitted", "choose a folder you can write to"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose another path"),
    errno.EIO: ("input/output error (a failing disk?)", "check the disk or write elsewhere"),
}
_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

# How the errno appears in the messages of the libraries that write for mtm.
_ERRNO_PATTERNS = (
    re.compile(r"\[Errno (\d+)\]"),  # Python
    re.compile(r"errno = (\d+)"),  # HDF5 (h5py): "file write failed: ... errno = 28, ..."
    re.compile(r"code: (\d+)"),  # Rust io::Error (safetensors): "Os { code: 28, kind: StorageFull, ..."
)


def error_number(exc: BaseException) -> int | None:
    """The errno behind an exception from Python, h5py or safetensors, if there is one."""
    number = getattr(exc, "errno", None)
    if isinstance(number, int) and number:
        return number
    text = str(exc)
    for pattern in _ERRNO_PATTERNS:
        match = pattern.search(text)
        if match:
            return int(match.group(1))
    return None


def failure_reason(exc: BaseException) -> tuple[str, str] | None:
    """(reason, what to do) when `exc` is a refusal of the file system, else None (then it is a bug
    and keeps its traceback)."""
    if not isinstance(exc, (OSError, RuntimeError)) and type(exc).__name__ != "SafetensorError":
        return None
    return _ENVIRONMENT_ERRNOS.get(error_number(exc))


def write_failure(exc: BaseException, path: str | os.PathLike, action: str = "writing") -> OutputError | None:
    """An OutputError saying why `path` could not be written, or None (see `failure_reason`)."""
    found = failure_reason(exc)
    if found is None:
        return None
    reason, hint = found
    return OutputError(f"{path}: {action} failed: {reason}; {hint}")


def is_out_of_space(exc: BaseException) -> bool:
    return error_number(exc) in _SPACE_ERRNOS


# --------------------------------------------------------------------------------------------------
# Locks
# --------------------------------------------------------------------------------------------------


def try_lock(fd: int) -> bool:
    """Take an exclusive flock on `fd` without waiting; False when another holder has it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:  # a file system without flock support (some network mounts): carry on
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            return True
        raise
    return True


def is_locked(path: Path) -> bool:
    """Whether some live process holds an flock on `path` (a file that does not exist is not locked)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        if not try_lock(fd):
            return True
        return False
    finally:
        os.close(fd)  # closing drops the probe's own lock

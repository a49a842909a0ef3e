"""Writing outputs: one-line errors for the ways a disk says no, durable writes, partial files, and
locks that die with their process.

Every command that writes (collect, convert, train, eval) fails the same way when the file system
refuses: one `error:` line naming the path and the reason, exit 1, the partial output removed and
any older output untouched. `write_failure` recognises such failures, whichever layer raised them:
Python's OSError, h5py's OSError/RuntimeError (which carry the errno inside their message) and
safetensors' errors (a Rust io::Error in the message). `check_writable_folder` finds a folder that
cannot take the output before any work is done.

Outputs are written under a temporary name and renamed into place (`atomic_write_text`, and
`atomic_write_file` for a file another library writes; HDF5 files through `open_partial` and
`DeferredFailureFile`). `atomic_temp_path` names the temporary files and `is_atomic_temp`
recognises them, e.g. the one a killed write leaves behind. Locks are `flock(2)` locks on an open file: the
kernel drops them when the process ends, however it ends, so a `kill -9` never leaves a stale lock
behind. (Where `fcntl` does not exist, locking is a no-op.)
"""

from __future__ import annotations

import errno
import io
import os
import re
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

from mtm.errors import MTMWarning, OutputError, OutputExistsError

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
}

# How the errno appears in the messages of the libraries that write for mtm.
_ERRNO_PATTERNS = (
    re.compile(r"\[Errno (\d+)\]"),  # Python
    re.compile(r"errno = (\d+)"),  # HDF5 (h5py): "file write failed: ... errno = 28, ..."
    re.compile(r"os error (\d+)"),  # Rust io::Error (safetensors): "I/O error: No space left on device (os error 28)"
    re.compile(r"Os \{ code: (\d+)"),  # the same, debug-formatted: "Os { code: 28, kind: StorageFull, ..."
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
    return None if found is None else OutputError(f"{path}: {action} failed: {found[0]}; {found[1]}")


def short_reason(exc: BaseException) -> str:
    """The first line of an exception's text (at most 160 characters), or its type's name."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


def check_output_path(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse to clobber an existing output unless asked; make sure its folder exists (it is
    created if missing, like `mkdir -p`) and takes new files (commands call this before any work,
    so a read-only folder costs nothing)."""
    p = refuse_existing_output(path, overwrite)
    check_writable_folder(p)
    return p


def refuse_existing_output(path: str | os.PathLike, overwrite: bool) -> Path:
    """The overwrite check of `check_output_path` alone (it creates nothing): a command with
    several outputs checks them all before it creates any folder."""
    p = Path(path)
    if p.is_dir():
        raise OutputExistsError(f"{p}: is a directory; give a file path for the output")
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p}: already exists; pass --overwrite to replace it")
    return p


def check_writable_folder(path: str | os.PathLike) -> Path:
    """Make sure a new file can be created in the folder of output `path`, before any work is done
    (an `eval` must not run its rollouts and only then find it cannot save them); a missing folder
    is created. Creating a file is the only test that holds for every user and file system: root
    ignores permissions, and a read-only mount refuses even root."""
    folder = Path(path).parent
    blocking = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise OutputError(f"{blocking}: is a file, not a folder; choose another path for the output")
    if not folder.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            found = failure_reason(exc)
            if found is None:
                raise
            raise OutputError(f"{folder}: cannot create this output folder ({found[0]}); {found[1]}") from None
    probe = folder / f".mtm-write-test-{uuid.uuid4().hex[:8]}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        found = failure_reason(exc)
        if found is None:
            raise
        raise OutputError(f"{folder}: cannot write in this folder ({found[0]}); {found[1]}") from None
    os.unlink(probe)
    return folder


# ---- Durable writes ------------------------------------------------------------------------------


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace `path` with `text` so that a crash leaves either the old or the new file, never half
    (`atomic_write_file`; the temp file is created exclusively, never an existing file reused)."""

    def write(tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)

    atomic_write_file(path, write)


def atomic_write_file(path: str | os.PathLike, write: Callable[[Path], None], *, suffix: str = "") -> Path:
    """Replace `path` with the file `write(tmp)` creates at a temporary path next to it, so that a
    crash leaves either the old or the new file, never half. The temp file sits in the same folder
    (os.replace is only atomic within one file system) and is fsynced before the rename, and the
    folder after it, so the rename cannot reach the disk first; on any failure the temp file is
    removed and `path` left as it was. `suffix` ends the temp file's name, for writers that choose
    the format from it (imageio). Returns `path`."""
    p = Path(path)
    tmp = atomic_temp_path(p, suffix)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(p.parent)
    return p


_ATOMIC_TEMP = re.compile(r"\.(?P<target>.+)\.[0-9a-f]+\.tmp(?:\.[^.]*)?")


def atomic_temp_path(path: str | os.PathLike, suffix: str = "") -> Path:
    """The temporary file an atomic write of `path` goes through: hidden, in the same folder,
    unique: ``.NAME.XXXXXXXX.tmp`` (then `suffix`, e.g. ``.v.mp4.1f2e3d4c.tmp.mp4``)."""
    p = Path(path)
    return p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.tmp{suffix}")


def is_atomic_temp(name: str, of: str | None = None) -> bool:
    """Whether a file `name` is a temporary file of an atomic write (`atomic_temp_path`), of the
    file named `of` when given; one a killed write left behind is safe to delete."""
    match = _ATOMIC_TEMP.fullmatch(name)
    return match is not None and (of is None or match.group("target") == of)


def remove_stale_temps(path: str | os.PathLike) -> None:
    """Delete the temp files that killed atomic writes of `path` left next to it, telling the user."""
    p = Path(path)
    for entry in p.parent.iterdir() if p.parent.is_dir() else ():
        if is_atomic_temp(entry.name, of=p.name) and entry.is_file():
            warnings.warn(f"{entry}: removed, left behind by an interrupted run", MTMWarning, stacklevel=3)
            entry.unlink(missing_ok=True)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or creation inside `path` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; its renames are journaled anyway.
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- Locks ---------------------------------------------------------------------------------------


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


# ---- Partial files -------------------------------------------------------------------------------


def open_partial(partial: Path, output: Path) -> int:
    """Create (or take over) `partial`, the file an output is written to before it is renamed into
    place, and lock it for as long as it is open.

    A partial file nobody holds was left by a killed run: it is reused (emptied), and the user is
    told. One that a live process holds is that process's work: OutputError. Returns the fd.
    """
    existed = partial.exists()
    try:
        fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o666)  # no O_TRUNC before the lock is ours
    except OSError as exc:
        failure = write_failure(exc, output, "creating the output")
        if failure is None:
            raise
        raise failure from None
    if not try_lock(fd):
        os.close(fd)
        raise OutputError(f"{output}: another process is writing this output ({partial} is locked); "
                          f"wait for it or choose another output")
    if existed:
        warnings.warn(f"{partial}: removed, left behind by an interrupted run", MTMWarning, stacklevel=3)
    os.ftruncate(fd, 0)
    return fd


class DeferredFailureFile(io.FileIO):
    """The file under an HDF5 file that h5py writes through (its "fileobj" driver), whose write
    failures are recorded instead of raised.

    HDF5 does not survive a failed write: its metadata cache is left inconsistent, every later call
    and the final close fail again, and h5py crashed (a segfault) while closing such a file on a
    full disk. Here HDF5 never sees a failure. The first one is kept in `failure` and every write
    after it is discarded (the file is abandoned anyway), so HDF5 runs on, closes cleanly, and the
    writer reports `failure` as one error line and deletes the file. KeyboardInterrupt is deferred the
    same way: raised inside HDF5's C code it would be lost or corrupt the file.
    """

    def __init__(self, fd: int) -> None:
        super().__init__(fd, "r+", closefd=True)
        self.failure: BaseException | None = None

    def write(self, data) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        if self.failure is None:
            try:
                done = 0
                while done < len(view):  # h5py expects whole writes; a raw write may be short
                    written = self._write_some(view[done:])
                    if not written:
                        raise OSError(errno.EIO, "write returned no bytes")
                    done += written
            except BaseException as exc:  # noqa: B036 - see the class docstring
                self.failure = exc
        return len(view)

    def _write_some(self, view: memoryview) -> int | None:
        return super().write(view)  # the one system call; tests inject faults here

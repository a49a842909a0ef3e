"""The run directory of `mtm train`: one writer at a time, and an --overwrite that never loses a run
for nothing.

    run_dir/.lock         an flock held by the process writing the run (rank 0 under torchrun) for as
                          long as it runs; the kernel drops it when the process ends, kill -9 included
    run_dir/.replacing/   the earlier run, while --overwrite moves it aside
    run_dir/.replaced/    the earlier run, set aside: deleted once the new run has saved its first
                          checkpoint, moved back if the new run fails before that

How `train` uses it:

1. `check()` before any data is read: a file in the way, a non-empty directory without --overwrite,
   or one holding files mtm train did not write, is one error line, and nothing is touched.
2. `acquire()`: create the directory if needed (remembering what it created), take the lock (a
   second writer, or a --resume of a run that is still training, fails here), finish what a killed
   command left behind (see `recover`), and check again, now that no one else can change it.
3. The caller validates its data, config and environment; then `begin()` sets an earlier run aside.
4. `commit()` after the first checkpoint deletes the earlier run.
5. Leaving the `with` block with an exception before `commit()` rolls back: the new run's files are
   removed, the earlier run moved back, and a directory this run created removed with its parents
   that it created, so a failed `train` leaves the file system as it found it.

After a kill -9 the next command on the directory recovers: with `.replacing/` the move was cut
short and the new run never started, so the earlier run moves back; with `.replaced/` and no
checkpoint of the new run, the earlier run moves back too; with a new checkpoint the replacement
is finished by deleting `.replaced/`.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path

from mtm.checkpoint import CHECKPOINTS_DIR, LAST_FILE
from mtm.errors import MTMWarning, OutputError, OutputExistsError
from mtm.io import failure_reason, fsync_dir, is_atomic_temp, try_lock

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = ".lock"
SET_ASIDE = ".replaced"
MOVING = ".replacing"

_OWN = (LOCK_FILE, SET_ASIDE, MOVING)
# What `mtm train` writes at the top of a run directory; anything else belongs to someone else.
_RUN_NAMES = {CONFIG_FILE, METRICS_FILE, CHECKPOINTS_DIR, "videos", "eval_report.json"}  # the last: mtm demo
_TENSORBOARD = re.compile(r"events\.out\.tfevents\..+")


def is_run_entry(name: str) -> bool:
    return (name in _RUN_NAMES or name in _OWN or _TENSORBOARD.fullmatch(name) is not None
            or any(is_atomic_temp(name, of=written) for written in (CONFIG_FILE, METRICS_FILE)))  # writes cut short


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class RunDirectory:
    """See the module docstring. `enabled=False` (torchrun ranks other than 0) makes every method a
    no-op: one process owns the directory."""

    def __init__(self, path: str | os.PathLike, *, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._fd: int | None = None
        self._created: Path | None = None  # the top-most folder this run created
        self._lock_created = False
        self._begun = False
        self.committed = False  # True once the new run has a checkpoint: nothing to roll back then

    # ---- checks ---------------------------------------------------------------------------------

    def _entries(self) -> list[str]:
        try:
            return sorted(e.name for e in self.path.iterdir() if e.name != LOCK_FILE)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def check(self, *, overwrite: bool = False, resume: bool = False) -> None:
        """Refuse, without touching anything, a run directory this run may not write (module doc)."""
        if not self.enabled:
            return
        p = self.path
        if p.exists() and not p.is_dir():
            raise OutputExistsError(f"{p}: exists and is not a directory; choose another --run-dir")
        if resume:
            return
        entries = self._entries()
        if not entries:
            return
        if not overwrite:
            raise OutputExistsError(
                f"{p}: run directory is not empty; continue it with --resume {p}, "
                f"or pass --overwrite to start over, or choose another --run-dir"
            )
        foreign = [name for name in entries if not is_run_entry(name)]
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise OutputExistsError(
                f"{p}: holds files that mtm train did not write ({shown}); --overwrite only replaces an "
                f"mtm run: move them out or choose another --run-dir"
            )

    # ---- the lock ---------------------------------------------------------------------------------

    def acquire(self, *, overwrite: bool = False, resume: bool = False) -> "RunDirectory":
        if not self.enabled:
            return self
        self.check(overwrite=overwrite, resume=resume)
        p = self.path
        if not p.exists():
            top = p
            while not top.parent.exists() and top.parent != top:
                top = top.parent
            try:
                p.mkdir(parents=True)
                self._created = top
            except FileExistsError:
                if not p.is_dir():
                    raise OutputExistsError(f"{p}: exists and is not a directory; choose another --run-dir") from None
            except OSError as exc:
                raise self._cannot("create the run directory", exc) from None
        lock = p / LOCK_FILE
        self._lock_created = not lock.exists()
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            self._undo_creation()
            raise self._cannot("write in the run directory", exc) from None
        if not try_lock(fd):
            os.close(fd)
            raise OutputError(
                f"{p}: another mtm process is writing this run directory{_holder(lock)}; wait for it to "
                f"finish or choose another --run-dir"
            )
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for the message above
        except OSError:
            pass  # only informative; a full disk is reported by the first real write
        try:
            self._recover()
            self.check(overwrite=overwrite, resume=resume)  # again, now that no one else can change it
        except BaseException:
            self.rollback()  # nothing begun yet: only a lock file or a folder this run created goes
            raise
        return self

    def _cannot(self, what: str, exc: OSError) -> OutputError:
        found = failure_reason(exc)
        reason = found[0] if found else (exc.strerror or str(exc)).lower()
        return OutputError(f"{self.path}: cannot {what} ({reason}); choose another --run-dir")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the lock
            self._fd = None

    # ---- replacing an earlier run -----------------------------------------------------------------

    def begin(self, overwrite: bool) -> None:
        """Called once the new run is known to be valid, right before it writes: sets an earlier run
        aside (with --overwrite; `check` has made sure it is an mtm run)."""
        if not self.enabled or self._begun:
            return
        entries = self._entries()
        if entries and not overwrite:
            return  # not a fresh run: never roll back over files this run did not write
        if entries:
            moving = self.path / MOVING
            moving.mkdir()
            for name in entries:
                os.rename(self.path / name, moving / name)
            os.rename(moving, self.path / SET_ASIDE)  # the move is complete: a kill now restores on recovery
            fsync_dir(self.path)
        self._begun = True

    def commit(self) -> None:
        """The new run has a checkpoint: the earlier run can go."""
        if not self.enabled or self.committed:
            return
        self.committed = True
        shutil.rmtree(self.path / SET_ASIDE, ignore_errors=True)  # what is left, recovery finishes

    def rollback(self) -> None:
        """Undo a run that failed before its first checkpoint (module doc, step 5)."""
        if not self.enabled or self.committed or self._fd is None:
            return
        try:
            if (self.path / MOVING).is_dir():  # failed while setting the earlier run aside
                self._move_back(self.path / MOVING)
            if self._begun:
                for name in self._entries():
                    if name not in _OWN:
                        _remove(self.path / name)
                aside = self.path / SET_ASIDE
                if aside.is_dir():
                    self._move_back(aside)
            if self._lock_created and self._created is None:
                (self.path / LOCK_FILE).unlink(missing_ok=True)
        finally:
            self.release()
            self._undo_creation()

    def _undo_creation(self) -> None:
        """Remove the run directory this run created, and the parents it created while they are empty
        (another run may have been started next to this one meanwhile)."""
        if self._created is None:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        folder = self.path
        while folder != self._created:
            folder = folder.parent
            try:
                folder.rmdir()
            except OSError:
                break
        self._created = None

    def _move_back(self, folder: Path) -> None:
        for entry in folder.iterdir():
            target = self.path / entry.name
            if target.exists():
                _remove(target)
            os.rename(entry, target)
        folder.rmdir()
        fsync_dir(self.path)

    def _recover(self) -> None:
        """Finish or undo what a killed --overwrite left (module doc). Runs under the lock."""
        p = self.path
        restored = False
        if (p / MOVING).is_dir():  # cut short while moving the earlier run: the new one never began
            self._move_back(p / MOVING)
            restored = True
        aside = p / SET_ASIDE
        if aside.is_dir():
            if (p / CHECKPOINTS_DIR / LAST_FILE).is_file():
                shutil.rmtree(aside)  # the new run had its checkpoint: the replacement is complete
            else:
                for name in self._entries():
                    if name not in _OWN:
                        _remove(p / name)
                self._move_back(aside)
                restored = True
        if restored:
            warnings.warn(f"{p}: restored the earlier run that an interrupted --overwrite had set aside",
                          MTMWarning, stacklevel=2)

    # ---- context manager --------------------------------------------------------------------------

    def __enter__(self) -> "RunDirectory":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.rollback()
        self.release()


def recover(path: str | os.PathLike) -> None:
    """Finish or undo a killed --overwrite in `path` before anything reads it (e.g. its config.yaml
    for --resume). Does nothing while another process holds the run."""
    p = Path(path)
    if not ((p / SET_ASIDE).is_dir() or (p / MOVING).is_dir()):
        return  # nothing to finish (and no lock file left in a folder that is not a run)
    rd = RunDirectory(p)
    try:
        fd = os.open(p / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return  # read-only or similar: the command itself will say so
    try:
        if try_lock(fd):
            rd._recover()
    finally:
        os.close(fd)


def _holder(lock: Path) -> str:
    try:
        pid = int(lock.read_text().strip())
    except (OSError, ValueError):
        return ""
    return f" (pid {pid})"

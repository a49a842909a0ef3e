"""Run `mtm ARGS...` and SIGKILL it just before its K-th file-system operation.

    python tests/fault_driver.py K COUNT_FILE mtm-args...

Operations counted: renames, replaces, unlinks, mkdir/rmdir, fsync, ftruncate, rmtree, every write
of an HDF5 output (mtm.io.DeferredFailureFile), every safetensors file and every metrics row. With
K = 0 nothing is killed and the number of operations is written to COUNT_FILE at exit, so a test
can pick kill moments that fall inside the command.
"""

import atexit
import os
import shutil
import signal
import sys
from pathlib import Path

kill_at, count_file, args = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
count = 0


def operation() -> None:
    global count
    count += 1
    if count == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


def counted(owner, name: str) -> None:
    original = getattr(owner, name)

    def wrapper(*a, **kw):
        operation()
        return original(*a, **kw)

    setattr(owner, name, wrapper)


for name in ("rename", "replace", "unlink", "mkdir", "rmdir", "fsync", "ftruncate"):
    counted(os, name)
counted(shutil, "rmtree")

import mtm.io  # noqa: E402

counted(mtm.io.DeferredFailureFile, "_write_some")
if args and args[0] == "train":  # torch only where it is needed: it takes seconds to import
    import safetensors.torch  # noqa: E402

    import mtm.training.metrics  # noqa: E402

    counted(safetensors.torch, "save_file")
    counted(mtm.training.metrics.Logger, "scalars")

if kill_at == 0:
    atexit.register(lambda: count_file.write_text(str(count)))

from mtm.cli import main  # noqa: E402

main(args)

"""Stopping a benchmark sweep (scripts/sweep_cells.py, scripts/bench_common.run_command): Ctrl-C or
SIGTERM to the sweep reaches its running command as exactly one SIGINT (a second one makes `mtm
train` stop without saving), the attempt is recorded, and the sweep exits 128 + the signal. A
stand-in command plays the training: it counts the SIGINTs it gets and exits 130 after a grace."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

# The stand-in training: writes `ready` once its handler is in place; on SIGINT counts it, and
# half a second after the first one (a save) writes how many it got and exits 130. (Before the fix
# SIGTERM killed the sweep and left this running, orphaned: hence its own time limit.)
CHILD = r"""
import signal, sys, time
from pathlib import Path
out = Path(sys.argv[1])
got = []
signal.signal(signal.SIGINT, lambda s, f: got.append(s))
(out / "ready").write_text("")
start = time.monotonic()
while not got and time.monotonic() - start < 60:  # never outlives a failed test by long
    time.sleep(0.01)
time.sleep(0.5)
(out / "sigints").write_text(str(len(got)))
sys.exit(130)
"""

# The sweep: one Commands.run of the stand-in, with or without a deadline (the `timeout` wrapper).
DRIVER = r"""
import datetime, sys
sys.path.insert(0, sys.argv[1])
import sweep_cells
from pathlib import Path
out = Path(sys.argv[2])
deadline = sweep_cells.now() + datetime.timedelta(hours=1) if sys.argv[3] == "deadline" else None
cmds = sweep_cells.Commands(out / "cell.steps.json", {}, deadline, False)
cmds.run("train", [sys.executable, "-c", sys.argv[4], str(out)])
print("not reached")
"""


@pytest.mark.parametrize("deadline", ["deadline", "none"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_sweep_passes_one_sigint_on_records_the_attempt_and_exits(tmp_path, deadline, sig):
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(SCRIPTS), str(tmp_path), deadline, CHILD],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        for _ in range(600):
            if (tmp_path / "ready").exists():
                break
            time.sleep(0.05)
        assert (tmp_path / "ready").exists(), proc.communicate(timeout=5)[0]
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, out
    assert (tmp_path / "sigints").read_text() == "1"  # one SIGINT: it saved, not the hard stop
    assert "not reached" not in out and f"stopped by {signal.Signals(sig).name}" in out
    attempts = json.loads((tmp_path / "cell.steps.json").read_text())["train"]
    assert len(attempts) == 1 and attempts[0]["returncode"] == 130 and attempts[0]["wall_s"] >= 0.5

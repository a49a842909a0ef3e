"""Outputs that cannot be written: a full disk, a read-only folder, a path under a file, a stale
partial file. Every one is one `error:` line, exit 1, no partial file, the old output untouched."""

import fcntl
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from faultkit import error_line, leftovers, remount_read_only, run_mtm, snapshot, tmpfs
from mtm.checkpoint import load_checkpoint
from mtm.cli import main
from mtm.collect import CollectOptions, collect
from mtm.data.formats.native import NativeSource
from test_train import TINY

LIMIT = 64 * 1024  # below every output these commands write here, above config and event files


@pytest.fixture(scope="module")
def reacher(tmp_path_factory) -> Path:
    """20 Reacher episodes, 138 KB in the native format."""
    path = tmp_path_factory.mktemp("src") / "reacher.hdf5"
    collect(CollectOptions("Reacher-v5", "expert", 20, path, num_envs=2), progress=False)
    return path


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def train_args(data: Path, run_dir: Path, *extra: str) -> list:
    args = ["train", "--no-progress", "--data", data, "--run-dir", run_dir]
    for item in TINY + ["train.steps=4", "train.save_every=2", "train.val_every=0", "data.rtg_horizon=50", *extra]:
        args += ["--set", item]
    return args


def command(name: str, reacher: Path, out: Path) -> list:
    if name == "convert":
        return ["convert", reacher, out, "--overwrite"]
    if name == "collect":
        return ["collect", "--no-progress", "--env", "Reacher-v5", "--policy", "expert", "--episodes", "20",
                "--num-envs", "2", "--output", out, "--overwrite"]
    return [*train_args(reacher, out), "--overwrite"]


def make_old_output(name: str, reacher: Path, out: Path) -> None:
    if name == "train":
        assert invoke(*train_args(reacher, out, "train.steps=2")).exit_code == 0
    else:
        out.write_bytes(reacher.read_bytes()[:5000] + b"an older output, kept byte for byte")


# ---- 3. a full disk ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["convert", "collect", "train"])
def test_full_disk_under_a_file_size_limit(reacher, tmp_path, name):
    out = tmp_path / ("run" if name == "train" else "out.hdf5")
    make_old_output(name, reacher, out)
    before = snapshot(out)
    proc = run_mtm(*command(name, reacher, out), file_size_limit=LIMIT)
    line = error_line(proc)
    assert "failed: file too large (a file-size limit was reached); write elsewhere or raise the limit" in line
    assert str(out) in line
    assert snapshot(out) == before
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["convert", "collect", "train"])
def test_full_disk_on_a_tiny_file_system(reacher, tmp_path, name):
    disk = tmp_path / "disk"
    with tmpfs(disk, "2m"):
        out = disk / ("run" if name == "train" else "out.hdf5")
        make_old_output(name, reacher, out)
        filler = disk / "filler"
        # Leave less room than the new output needs (and, for train, than its first checkpoint).
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        filler.write_bytes(b"\0" * max(free - 60 * 1024, 0))
        before = snapshot(out)
        proc = run_mtm(*command(name, reacher, out))
        line = error_line(proc)
        assert "failed: no space left on device; free some space or write elsewhere" in line
        assert snapshot(out) == before
        assert leftovers(disk) == []


# ---- 6. outputs that cannot be written at all -------------------------------------------------

def _no_rollouts(monkeypatch):
    import mtm.evaluation.rollouts

    def refuse(*args, **kwargs):
        raise AssertionError("rollouts ran before the output was checked")

    monkeypatch.setattr(mtm.evaluation.rollouts, "evaluate_policy", refuse)


@pytest.mark.parametrize("option,name", [("--output", "report.json"), ("--video", "video.mp4")])
def test_eval_output_under_a_file_fails_before_any_rollout(reacher_run, tmp_path, monkeypatch, option, name):
    _no_rollouts(monkeypatch)
    blocker = tmp_path / "afile"
    blocker.write_text("mine\n")
    result = invoke("eval", "--checkpoint", reacher_run, "--episodes", "2", "--no-progress", option, blocker / name)
    line = error_line(result)
    assert line == f"error: {blocker}: is a file, not a folder; choose another path for the output"


@pytest.mark.parametrize("name", ["convert", "collect"])
def test_data_output_under_a_file(reacher, tmp_path, name):
    blocker = tmp_path / "afile"
    blocker.write_text("mine\n")
    result = invoke(*command(name, reacher, blocker / "out.hdf5"))
    line = error_line(result)
    assert line == f"error: {blocker}: is a file, not a folder; choose another path for the output"


def test_inspect_media_under_a_file_fails_before_the_replay(reacher, tmp_path, monkeypatch):
    import mtm.cli.data_commands as data_commands

    def refuse(*args, **kwargs):
        raise AssertionError("the replay ran before the output folder was checked")

    monkeypatch.setattr(data_commands, "_replay", refuse)
    blocker = tmp_path / "afile"
    blocker.write_text("mine\n")
    for option, name in (("--video", "v.mp4"), ("--contact-sheet", "c.png")):
        line = error_line(invoke("inspect", reacher, option, blocker / "sub" / name))
        assert line == f"error: {blocker}: is a file, not a folder; choose another path for the output"


def test_convert_of_a_bad_source_creates_no_output_folder(tmp_path):
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(b"not hdf5")
    result = invoke("convert", bad, tmp_path / "new" / "deep" / "out.hdf5")
    assert result.exit_code == 1 and error_line(result).startswith("error: ")
    assert not (tmp_path / "new").exists()


def test_read_only_folder(reacher, reacher_run, tmp_path, monkeypatch):
    _no_rollouts(monkeypatch)
    disk = tmp_path / "ro"
    with tmpfs(disk, "1m"):
        (disk / "old-run").mkdir()
        remount_read_only(disk)
        cases = [
            (command("convert", reacher, disk / "out.hdf5"), f"{disk}: cannot write in this folder"),
            (command("collect", reacher, disk / "out.hdf5"), f"{disk}: cannot write in this folder"),
            (train_args(reacher, disk / "run"), f"{disk / 'run'}: cannot create the run directory"),
            (train_args(reacher, disk / "old-run"), f"{disk / 'old-run'}: cannot write in the run directory"),
            (["eval", "--checkpoint", reacher_run, "--output", disk / "r.json"], f"{disk}: cannot write in this folder"),
            (["eval", "--checkpoint", reacher_run, "--video", disk / "v.mp4"], f"{disk}: cannot write in this folder"),
        ]
        for args, expected in cases:
            result = invoke(*args)
            line = error_line(result)
            assert expected in line and "read-only file system" in line, (args, line)


# ---- 7. a partial file left by a kill -9 -----------------------------------------------------

def test_stale_partial_is_removed_and_the_user_told(reacher, tmp_path):
    out = tmp_path / "out.hdf5"
    stale = tmp_path / "out.hdf5.partial"
    stale.write_bytes(b"half a file from a killed run")
    result = invoke("convert", reacher, out)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: {stale}: removed, left behind by an interrupted run"]
    assert not stale.exists()
    with NativeSource(out) as src:
        assert len(src) == 20


def test_partial_file_of_a_live_writer_is_left_alone(reacher, tmp_path):
    out = tmp_path / "out.hdf5"
    busy = tmp_path / "out.hdf5.partial"
    busy.write_bytes(b"being written")
    fd = os.open(busy, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as the process writing it holds it
    try:
        result = invoke("convert", reacher, out)
    finally:
        os.close(fd)
    line = error_line(result)
    assert line == f"error: {out}: another process is writing this output ({busy} is locked); wait for it or choose another output"
    assert busy.read_bytes() == b"being written" and not out.exists()


def test_a_train_that_runs_out_of_space_after_a_checkpoint_says_how_to_resume(reacher, tmp_path):
    run = tmp_path / "run"
    # The first checkpoint fits, the second does not: keep_last=0 keeps both, model.safetensors
    # alone is ~136 KB, so a 300 KB limit per file cannot stop it; limit the folder with tmpfs
    # where possible, else skip.
    with tmpfs(tmp_path / "disk", "900k") as disk:
        run = disk / "run"
        proc = run_mtm(*train_args(reacher, run, "train.steps=40", "train.save_every=2", "train.keep_last=0"))
        line = error_line(proc)
        assert "no space left on device" in line and f"continue with: mtm train --resume {run}" in line
        assert load_checkpoint(run).step >= 2


@pytest.mark.parametrize("exc, reason", [
    (OSError(28, "No space left on device"), "no space left on device"),
    (RuntimeError("Unable to flush file (file write failed: ..., errno = 28, error message = 'No space left "
                  "on device', ...)"), "no space left on device"),  # h5py
    (RuntimeError("Can't decrement id ref count (unable to extend file properly, errno = 27, ...)"),
     "file too large (a file-size limit was reached)"),
    (OSError(30, "Read-only file system"), "read-only file system"),
    (RuntimeError("CUDA error: an illegal memory access, error code: 2"), None),  # a bug: keeps its traceback
    (OSError(5, "Input/output error"), None),
    (ValueError("[Errno 28] looks like one but is not an OSError"), None),
])
def test_write_failures_are_recognised_in_each_library_s_words(exc, reason):
    from safetensors import SafetensorError

    from mtm.io import write_failure

    failure = write_failure(exc, "out.hdf5")
    assert (failure is None) == (reason is None)
    if reason is not None:
        assert str(failure).startswith(f"out.hdf5: writing failed: {reason}; ")
    rust = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert "no space left on device" in str(write_failure(rust, "m.safetensors"))


def test_atomic_temp_files_are_named_and_recognised_in_one_place():
    from mtm.io import atomic_temp_path, is_atomic_temp

    for suffix in ("", ".mp4"):
        name = atomic_temp_path("/runs/r/metrics.jsonl", suffix).name
        assert name.startswith(".metrics.jsonl.") and name.endswith(".tmp" + suffix)
        assert is_atomic_temp(name) and is_atomic_temp(name, of="metrics.jsonl") and not is_atomic_temp(name, of="last")
    for other in ("metrics.jsonl", "out.hdf5.partial", ".tmp-step_00000002-1a2b3c4d", ".last.tmp"):
        assert not is_atomic_temp(other)

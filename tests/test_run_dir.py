"""`mtm train` and its run directory: --overwrite never loses a run for nothing, one writer at a time."""

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from faultkit import error_line, snapshot
from mtm.checkpoint import load_checkpoint
from mtm.cli import main
from mtm.config import RunConfig, load_config
from mtm.errors import MTMWarning
from mtm.training.loop import train
from mtm.training.rundir import LOCK_FILE, METRICS_FILE, SET_ASIDE, RunDirectory
from test_train import TINY, write_linear_system

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_linear_system(tmp_path_factory.mktemp("data") / "linear.hdf5", episodes=12, length=20)


@pytest.fixture(scope="module")
def nan_dataset(dataset, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "nan_obs.hdf5"
    path.write_bytes(dataset.read_bytes())
    with h5py.File(path, "a") as f:
        f["observations"][7, 1] = np.nan
    return path


def cli(*args) -> "CliRunner.Result":
    return CliRunner().invoke(main, ["train", "--no-progress", *map(str, args)])


def tiny_args(data: Path, run_dir: Path, *extra: str) -> list[str]:
    args = ["--data", data, "--run-dir", run_dir]
    for item in TINY + ["train.steps=4", "train.save_every=2", "train.val_every=0", *extra]:
        args += ["--set", item]
    return args


@pytest.fixture
def good_run(dataset, tmp_path) -> Path:
    run = tmp_path / "ok"
    result = cli(*tiny_args(dataset, run))
    assert result.exit_code == 0, result.output
    return run


# ---- 1. --overwrite --------------------------------------------------------------------------

def test_overwrite_with_bad_data_leaves_the_old_run_byte_identical(good_run, nan_dataset):
    before = snapshot(good_run)
    line = error_line(cli(*tiny_args(nan_dataset, good_run), "--overwrite"))
    assert "holds NaN or inf" in line
    assert snapshot(good_run) == before
    assert load_checkpoint(good_run).step == 4


def test_overwrite_refuses_a_folder_that_is_not_an_mtm_run(dataset, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "mydata.hdf5").write_bytes(dataset.read_bytes())
    (victim / "notes.txt").write_text("x\n")
    line = error_line(cli(*tiny_args(victim / "mydata.hdf5", victim), "--overwrite"))
    assert f"{victim}: holds files that mtm train did not write (mydata.hdf5, notes.txt)" in line
    assert "choose another --run-dir" in line
    assert sorted(p.name for p in victim.iterdir()) == ["mydata.hdf5", "notes.txt"]
    assert (victim / "mydata.hdf5").read_bytes() == dataset.read_bytes()


def test_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(good_run, dataset):
    before = snapshot(good_run)
    # Diverges at step 2, before its first checkpoint (step 3): the old run must come back whole.
    failing = tiny_args(dataset, good_run, "train.lr=1e30", "train.warmup_steps=0", "train.grad_clip=0",
                        "train.save_every=3", "train.steps=6")
    line = error_line(cli(*failing, "--overwrite"))
    assert "loss became NaN/inf" in line and "no checkpoint was saved" in line
    assert snapshot(good_run) == before
    assert not (good_run / SET_ASIDE).exists()

    result = cli(*tiny_args(dataset, good_run, "train.steps=2"), "--overwrite")
    assert result.exit_code == 0, result.output
    assert load_checkpoint(good_run).step == 2
    assert sorted(p.name for p in (good_run / "checkpoints").iterdir()) == ["last", "step_00000002"]
    assert len(list(good_run.glob("events.out.tfevents.*"))) == 1  # the old run's events are gone
    assert not (good_run / SET_ASIDE).exists()


def test_a_killed_overwrite_gives_the_old_run_back_to_the_next_command(good_run, dataset):
    before = snapshot(good_run)
    rd = RunDirectory(good_run)
    rd.acquire(overwrite=True)
    rd.begin(overwrite=True)
    (good_run / "config.yaml").write_text("half a new run\n")
    rd.release()  # as a kill -9 would: no rollback ran, the kernel dropped the lock
    assert (good_run / SET_ASIDE).is_dir()

    result = cli("--resume", good_run, "--set", "train.steps=6")
    assert result.exit_code == 0, result.output
    assert "restored the earlier run that an interrupted --overwrite had set aside" in result.output
    assert load_checkpoint(good_run).step == 6
    assert not (good_run / SET_ASIDE).exists()
    assert (good_run / "checkpoints" / "step_00000004" / "model.safetensors").read_bytes() == \
        before["checkpoints/step_00000004/model.safetensors"]


# ---- 2. one writer per run directory ---------------------------------------------------------

def _hold_lock(run_dir: Path) -> int:
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_a_second_writer_and_a_resume_of_a_live_run_are_refused(good_run, dataset, tmp_path):
    before = snapshot(good_run)
    fd = _hold_lock(good_run)  # another open file description: conflicts as another process would
    try:
        line = error_line(cli("--resume", good_run, "--set", "train.steps=6"))
        assert f"{good_run}: another mtm process is writing this run directory" in line
        line = error_line(cli(*tiny_args(dataset, good_run), "--overwrite"))
        assert "another mtm process is writing this run directory" in line
        assert snapshot(good_run) == before

        fresh = tmp_path / "fresh"
        fresh.mkdir()
        fd2 = _hold_lock(fresh)
        try:
            line = error_line(cli(*tiny_args(dataset, fresh)))
            assert "another mtm process is writing this run directory" in line
        finally:
            os.close(fd2)
    finally:
        os.close(fd)
    result = cli("--resume", good_run, "--set", "train.steps=6")
    assert result.exit_code == 0, result.output


def test_the_lock_dies_with_its_process(good_run):
    code = ("import os, signal, sys; from mtm.training.rundir import RunDirectory; "
            "RunDirectory(sys.argv[1]).acquire(resume=True); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code, str(good_run)], cwd=REPO)
    assert proc.returncode == -9
    result = cli("--resume", good_run, "--set", "train.steps=6")
    assert result.exit_code == 0, result.output


# ---- 6/7. where the run directory cannot be, and what a failed run leaves --------------------

def test_run_dir_that_is_a_file(dataset, tmp_path):
    target = tmp_path / "afile"
    target.write_text("mine\n")
    line = error_line(cli(*tiny_args(dataset, target)))
    assert line == f"error: {target}: exists and is not a directory; choose another --run-dir"
    line = error_line(cli(*tiny_args(dataset, target / "run")))
    assert f"{target / 'run'}: cannot create the run directory" in line
    assert target.read_text() == "mine\n"


def test_a_failed_run_leaves_no_run_directory(nan_dataset, dataset, tmp_path):
    run = tmp_path / "runs" / "new"
    error_line(cli(*tiny_args(nan_dataset, run)))
    assert not (tmp_path / "runs").exists()
    # A folder the user made stays, empty as it was.
    made = tmp_path / "made"
    made.mkdir()
    error_line(cli(*tiny_args(dataset, made, "train.lr=1e30", "train.warmup_steps=0", "train.grad_clip=0",
                                  "train.save_every=3", "train.steps=6")))
    assert made.is_dir() and list(made.iterdir()) == []


def test_resume_truncates_metrics_to_the_checkpoint(dataset, tmp_path):
    run = tmp_path / "run"
    common = TINY + [f"data.path={dataset}", f"train.run_dir={run}", "train.steps=10", "train.save_every=4",
                     "train.val_every=0", "train.keep_last=0"]
    train(load_config(RunConfig, None, common), progress=False)
    # As if killed after logging step 10 with step 8 as the last checkpoint.
    (run / "checkpoints" / "last").write_text("step_00000008\n")
    with open(run / METRICS_FILE, "a") as fh:
        fh.write('{"step": 10, "train/loss": 1.0, "train/lo')  # a line cut by the kill
    with pytest.warns(MTMWarning, match="resuming at step 8 with train.steps 10 -> 12: "):  # a longer schedule
        train(load_config(RunConfig, run / "config.yaml", ["train.steps=12"]), resume=run, progress=False)
    rows = [json.loads(line) for line in open(run / METRICS_FILE)]
    assert [row["step"] for row in rows] == list(range(1, 13))
    # The training clocks (the x axis of learning curves) go on from the checkpoint's row.
    for key in ("charts/train_cpu_s", "charts/train_wall_s"):
        values = [row[key] for row in rows]
        assert values == sorted(values) and values[0] > 0
        assert values[8] >= values[7]  # step 9, the first after the resume, continues step 8's total


def test_undoing_a_created_run_dir_spares_a_run_started_next_to_it(tmp_path):
    rd = RunDirectory(tmp_path / "runs" / "a")
    rd.acquire()  # creates runs/ and runs/a
    (tmp_path / "runs" / "b").mkdir()  # meanwhile another run starts next to it
    (tmp_path / "runs" / "b" / "config.yaml").write_text("theirs\n")
    rd.rollback()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["b"]
    assert (tmp_path / "runs" / "b" / "config.yaml").read_text() == "theirs\n"


def test_resume_and_overwrite_exclude_each_other(good_run):
    line = error_line(cli("--resume", good_run, "--overwrite"))
    assert line == "error: --resume continues a run and --overwrite replaces one; give only one of them"


def test_resume_refuses_another_run_dir_and_changes_nothing(good_run, tmp_path):
    """--resume continues the run where it is; a --run-dir elsewhere would only be written into its
    config.yaml, so it is refused before anything is touched. The run's own path is accepted."""
    before = snapshot(good_run)
    for extra in (["--run-dir", str(tmp_path / "fork")], ["--set", f"train.run_dir={tmp_path / 'fork'}"]):
        line = error_line(cli("--resume", good_run, *extra))
        assert line == (f"error: --resume continues the run in {good_run}, where it is; drop --run-dir "
                        "(to start a new run, copy the directory and resume the copy)")
    assert snapshot(good_run) == before
    assert not (tmp_path / "fork").exists()
    result = cli("--resume", good_run, "--run-dir", good_run, "--set", "train.steps=6")
    assert result.exit_code == 0, result.output
    assert load_checkpoint(good_run).step == 6


def test_resuming_a_folder_that_is_not_a_run_says_so_and_leaves_it_as_it_was(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("x\n")
    line = error_line(cli("--resume", folder))
    assert line == f"error: {folder}: not a run directory (no config.yaml); nothing to resume"
    assert sorted(p.name for p in folder.iterdir()) == ["todo.txt"]  # no lock file left behind


def test_resume_refuses_data_settings_that_would_change_the_split_or_the_tokens(good_run):
    before = snapshot(good_run)
    for key, value, was in (("data.split_seed", "3", "0"), ("data.window", "2", "4"), ("data.rtg", "sum", "'average'")):
        line = error_line(cli("--resume", good_run, "--set", f"{key}={value}", "--set", "train.steps=6"))
        now = repr(int(value)) if value.isdigit() else repr(value)
        assert line == (f"error: {key} cannot change on --resume (the run was trained with {was}, now {now}); "
                        "start a new run to train with it")
    assert snapshot(good_run) == before

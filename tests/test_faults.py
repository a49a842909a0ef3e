"""Fault injection: bad files, a disk that fills up, and kill -9, against every command that writes.

README promises that a user mistake is one `error:` line and exit 1, that nothing is overwritten
without --overwrite, and that an interrupted command never leaves a half-written file. Each case
here checks that promise after the fault:

1. bad files: every reader (d4rl, native, minari, robomimic) x every malformation
   (faultkit.MALFORMATIONS) x every command that reads data (inspect, convert, train);
2. a full disk: the k-th write fails with ENOSPC (faultkit.FullDisk) in convert, collect and
   train --overwrite, for seeded k: the old output must be byte-identical, no partial file left, and
   a train that had saved a checkpoint must resume to exactly the weights of an uninterrupted run;
3. kill -9 at seeded moments of convert, collect and train --overwrite (tests/fault_driver.py kills
   the process just before its k-th file-system operation): the output is the old bytes or a
   complete new file, never half of one; the next command cleans up and says so; a killed train
   gives the old run back or resumes exactly.

The number of cases tried is printed at the end of the session (conftest.py).
"""

import json
import random
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import faultkit as fk
from faultkit import LOCK_FILE, MALFORMATIONS, WRITERS, error_line, hdf5_file, snapshot
from mtm.checkpoint import CHECKPOINTS_DIR, LAST_FILE, load_checkpoint
from mtm.cli import main
from mtm.data.formats.native import NativeSource
from mtm.errors import MTMWarning
from mtm.training.rundir import recover

SEED = 11
KILLS = 4  # kill -9 moments per command
DISK_FULL = 4  # full-disk moments per command


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def pick(total: int, n: int, salt: str) -> list[int]:
    """n distinct seeded moments in 1..total, spread over the whole command."""
    rng = random.Random(f"{SEED}-{salt}")
    edges = np.linspace(1, total + 1, n + 1).astype(int)
    return [rng.randrange(lo, max(hi, lo + 1)) for lo, hi in zip(edges[:-1], edges[1:])]


TINY = ["model.width=16", "model.encoder_layers=1", "model.decoder_layers=1", "model.heads=1", "model.dropout=0.1",
        "train.batch_size=16", "train.lr=1e-3", "train.warmup_steps=2", "train.log_every=1", "train.val_every=0",
        "train.device=cpu", "train.deterministic=true", "train.keep_last=0", "data.rtg_horizon=50"]


def train_args(data: Path, run_dir: Path, *extra: str) -> list:
    args = ["train", "--no-progress", "--data", data, "--run-dir", run_dir]
    for item in TINY + list(extra):
        args += ["--set", item]
    return args


# ---- 1. bad files -----------------------------------------------------------------------------

EPISODE_NAMES = {"native": ("ep_000000", "ep_000001"), "minari": ("episode_0", "episode_1"),
                 "robomimic": ("demo_0", "demo_1")}
EXPECTED = {  # malformation -> format -> the heart of the one error line ({file}, {ep0}, {ep1} filled in)
    "missing": {"*": "{given}: no such file"},
    "not-hdf5": {"*": "{file}: not an HDF5 file"},
    "truncated": {"*": "{file}: HDF5 file is truncated or corrupt"},
    "no-episodes": {"d4rl": "{file}: the file holds no transitions", "robomimic": "{file}: holds no demos",
                    "*": "{file}: holds no episodes"},
    "no-terminations": {"d4rl": "{file}: missing D4RL dataset(s) terminals",
                        "minari": "{file} {ep1}: missing 'terminations'",
                        "robomimic": "{file} {ep1}: missing dataset 'dones'",
                        "*": "{file} {ep1}: missing dataset 'terminations'"},
    "short-rewards": {"d4rl": "{file}: 'rewards' has 14 rows but 'observations' has 15",
                      "*": "{file} {ep1}: rewards has shape (3,) but there are 4 actions"},
    "nan-state": {"d4rl": "{file}: 'observations' holds NaN or inf (first at row 7)",
                  "*": "{file} {ep1}: observations/state holds NaN or inf (first at step 2)"},
    "inf-action": {"d4rl": "{file}: 'actions' holds NaN or inf (first at row 6)",
                   "*": "{file} {ep1}: actions holds NaN or inf (first at step 1)"},
    "state-size": {"d4rl": "{file}: 'next_observations' has shape (15, 2), 'observations' has (15, 3)",
                   "*": "{file} {ep1}: observations/state has per-step shape (2,) but {ep0} has (3,)"},
    "text-state": {"d4rl": "{file}: 'observations' has dtype |S1; expected numbers",
                   "native": "{file} {ep1}: observations/state holds |S1 data; expected numbers",
                   "minari": "{file} {ep1} observations/state: holds |S1 data; mtm needs numeric observations",
                   "robomimic": "{file} {ep1}: obs/state holds |S1 data; mtm needs numeric observations"},
    "zero-steps": {"d4rl": "{file}: 'observations' has shape (15,); expected (N, dim)",
                   "robomimic": "{file} {ep1}: demo has no steps", "*": "{file} {ep1}: episode has no steps"},
    "bad-metadata": {"d4rl": "{file}: 'terminals' must hold booleans (or 0/1), found dtype |S3",
                     "native": "{file}: schema version 99 is newer than this mtm understands",
                     "minari": "{given}/data/metadata.json: not valid JSON",
                     "robomimic": "{file}: data.attrs['env_args'] is not valid JSON"},
}


@pytest.mark.parametrize("what", MALFORMATIONS)
@pytest.mark.parametrize("fmt", list(WRITERS))
def test_bad_file_is_one_error_line_for_every_command(tmp_path, fmt, what):
    given = WRITERS[fmt](tmp_path / ("dataset" if fmt == "minari" else "dataset.hdf5"))
    fk.edit(fmt, given, what)
    ep0, ep1 = EPISODE_NAMES.get(fmt, ("", ""))
    expected = EXPECTED[what].get(fmt, EXPECTED[what].get("*")).format(
        given=given, file=hdf5_file(fmt, given), ep0=ep0, ep1=ep1)
    out, run = tmp_path / "out.hdf5", tmp_path / "run"
    for args in (["inspect", given], ["convert", given, out], train_args(given, run, "train.steps=2")):
        result = invoke(*args)
        line = error_line(result)
        assert expected in line, (args[0], line)
        fk.tried("bad-file cases")
    assert not out.exists() and not run.exists() and not fk.leftovers(tmp_path)


# ---- 2. a disk that fills up ------------------------------------------------------------------

@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A small native dataset of Reacher (6 episodes of 50 steps) to convert and train on."""
    path = tmp_path_factory.mktemp("source") / "reacher.hdf5"
    result = invoke("collect", "--no-progress", "--env", "Reacher-v5", "--policy", "expert", "--episodes", "6",
                    "--num-envs", "2", "--output", path)
    assert result.exit_code == 0, result.output
    return path


def collect_args(out: Path) -> list:
    return ["collect", "--no-progress", "--env", "Reacher-v5", "--policy", "expert", "--episodes", "6",
            "--num-envs", "2", "--seed", "100", "--output", out, "--overwrite"]


def old_native_output(path: Path) -> Path:
    path.unlink(missing_ok=True)
    fk.write_native(path)  # a valid, different, older file
    return path


def assert_complete(path: Path, episodes: int) -> None:
    with NativeSource(path) as src:
        assert len(src) == episodes
        for i in range(len(src)):
            src.episode(i)  # reads and validates every array


@pytest.mark.parametrize("name", ["convert", "collect"])
def test_full_disk_while_writing_data(source, tmp_path, monkeypatch, name):
    out = tmp_path / "out.hdf5"
    args = ["convert", source, out, "--overwrite"] if name == "convert" else collect_args(out)
    with monkeypatch.context() as m:
        counter = fk.FullDisk(m)
        assert invoke(*args).exit_code == 0
    writes = counter.count
    for k in pick(writes, DISK_FULL, name):
        old_native_output(out)
        before = out.read_bytes()
        with monkeypatch.context() as m:
            disk = fk.FullDisk(m, fail_at=k)
            result = invoke(*args)
        assert disk.failed, k
        line = error_line(result)
        assert line == f"error: {out}: writing failed: no space left on device; free some space or write " \
                       f"elsewhere; nothing was written", (k, line)
        assert out.read_bytes() == before and fk.leftovers(tmp_path) == [], k
        fk.tried("full-disk cases")


NEW_RUN = ["train.steps=6", "train.save_every=2"]  # replaces the old run; checkpoints at 2, 4, 6


@pytest.fixture(scope="module")
def train_setup(source, tmp_path_factory):
    """An old run (to be replaced) and the weights an uninterrupted replacement run ends with."""
    root = tmp_path_factory.mktemp("train")
    old = root / "old"
    assert invoke(*train_args(source, old, "train.steps=2", "train.save_every=2", "train.seed=5")).exit_code == 0
    reference = root / "reference"
    assert invoke(*train_args(source, reference, *NEW_RUN)).exit_code == 0
    return old, load_checkpoint(reference).model_state


def check_run_dir_after_fault(run: Path, old_snapshot: dict, reference_weights: dict) -> str:
    """What must hold in a run directory after a fault; returns which way it went."""
    checkpoints = run / CHECKPOINTS_DIR
    for step_dir in checkpoints.glob("step_*") if checkpoints.is_dir() else ():
        load_checkpoint(step_dir).load_train_state()  # nothing half-written under a final name
    if (checkpoints / LAST_FILE).is_file():
        load_checkpoint(run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MTMWarning)
        recover(run)  # what the next command on the directory does first
    if "seed: 5" in (run / "config.yaml").read_text():  # the old run came back, byte for byte
        assert snapshot(run) == old_snapshot
        return "old run restored"
    result = invoke("train", "--no-progress", "--resume", run)
    assert result.exit_code == 0, result.output
    final = load_checkpoint(run)
    assert final.step == 6
    assert all(torch.equal(final.model_state[k], reference_weights[k]) for k in reference_weights)
    steps = [json.loads(line)["step"] for line in open(run / "metrics.jsonl")]
    assert steps == sorted(set(steps)) == list(range(1, 7))  # every step logged once
    return "resumed exactly"


def copy_run(old: Path, to: Path) -> Path:
    shutil.copytree(old, to, ignore=shutil.ignore_patterns(LOCK_FILE))
    return to


def test_full_disk_while_training(source, train_setup, tmp_path, monkeypatch):
    old, reference_weights = train_setup
    args = [*train_args(source, tmp_path / "count", *NEW_RUN), "--overwrite"]
    with monkeypatch.context() as m:
        counter = fk.FullDisk(m)
        assert invoke(*args).exit_code == 0
    outcomes = []
    for k in pick(counter.count, DISK_FULL, "train"):
        run = copy_run(old, tmp_path / f"run{k}")
        before = snapshot(run)
        with monkeypatch.context() as m:
            disk = fk.FullDisk(m, fail_at=k)
            result = invoke(*train_args(source, run, *NEW_RUN), "--overwrite")
        assert disk.failed, k
        line = error_line(result)
        assert f"error: {run}: writing failed: no space left on device" in line, (k, line)
        if "--resume" not in line:  # failed before the new run's first checkpoint: rolled back
            assert snapshot(run) == before, k
        outcomes.append(check_run_dir_after_fault(run, before, reference_weights))
        fk.tried("full-disk cases")
    assert set(outcomes) == {"old run restored", "resumed exactly"}, outcomes  # both sides of the first checkpoint


# ---- 3. kill -9 ----------------------------------------------------------------------------------

DRIVER = Path(__file__).with_name("fault_driver.py")


def killed(kill_at: int, args: list, count_file: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DRIVER), str(kill_at), str(count_file), *map(str, args)],
                          cwd=fk.REPO, env=fk.mtm_env(), capture_output=True, text=True, timeout=120)


def operations(args: list, tmp_path: Path) -> int:
    count_file = tmp_path / "operations"
    proc = killed(0, args, count_file)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(count_file.read_text())


@pytest.mark.parametrize("name", ["convert", "collect"])
def test_kill_9_while_writing_data(source, tmp_path, name):
    out = tmp_path / "out.hdf5"
    args = ["convert", source, out, "--overwrite"] if name == "convert" else collect_args(out)
    old_native_output(out)
    total = operations(args, tmp_path)
    for k in pick(total, KILLS, name):
        old_native_output(out)
        before = out.read_bytes()
        proc = killed(k, args, tmp_path / "unused")
        assert proc.returncode == -9, (k, proc.stderr[-2000:])
        # The output is the old file or a complete new one, never half of one.
        if out.read_bytes() != before:
            assert_complete(out, 6)
        stale = out.with_name(out.name + ".partial")
        left = stale.exists()
        result = invoke(*args)  # the next run to the same output
        assert result.exit_code == 0, result.output
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert warnings == ([f"warning: {stale}: removed, left behind by an interrupted run"] if left else [])
        assert_complete(out, 6)
        assert fk.leftovers(tmp_path) == []
        fk.tried("kill -9 cases")


def test_kill_9_while_training(source, train_setup, tmp_path):
    old, reference_weights = train_setup
    run = tmp_path / "run"
    args = [*train_args(source, run, *NEW_RUN), "--overwrite"]
    copy_run(old, run)
    total = operations(args, tmp_path)
    outcomes = []
    for k in pick(total, KILLS, "train"):
        shutil.rmtree(run)
        copy_run(old, run)
        before = snapshot(run)
        proc = killed(k, args, tmp_path / "unused")
        assert proc.returncode == -9, (k, proc.stderr[-2000:])
        outcomes.append(check_run_dir_after_fault(run, before, reference_weights))
        fk.tried("kill -9 cases")
    assert set(outcomes) == {"old run restored", "resumed exactly"}, outcomes

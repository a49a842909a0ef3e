"""`mtm train`: a tiny run end to end, exact resume after kill -9, DDP on CPU, divergence, errors."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from mtm.checkpoint import load_checkpoint
from mtm.cli import main
from mtm.config import RunConfig, load_config
from mtm.training.loop import TrainingDiverged, train
from mtm.training.rundir import METRICS_FILE

REPO = Path(__file__).resolve().parents[1]

TINY = [
    "model.width=32", "model.encoder_layers=1", "model.decoder_layers=1", "model.heads=2",
    "train.batch_size=64", "train.lr=1e-3", "train.warmup_steps=5", "train.log_every=1",
    "train.val_windows=256", "train.device=cpu",
]


def write_linear_system(path: Path, episodes: int = 24, length: int = 40, seed: int = 0) -> Path:
    """A D4RL-layout file of a linear system s' = A s + B a: learnable FD and ID targets."""
    rng = np.random.default_rng(seed)
    a_mat = np.eye(4) * 0.9 + rng.normal(0, 0.05, (4, 4))
    b_mat = rng.normal(0, 0.5, (4, 2))
    obs, acts, rews, terms, touts = [], [], [], [], []
    for e in range(episodes):
        s = rng.normal(0, 1, 4)
        for t in range(length):
            a = np.tanh(-0.5 * s[:2] + rng.normal(0, 0.3, 2))
            obs.append(s)
            acts.append(a)
            rews.append(-float(s @ s))
            terms.append(False)
            touts.append(t == length - 1)
            s = a_mat @ s + b_mat @ a
    with h5py.File(path, "w") as f:
        f["observations"] = np.array(obs, np.float32)
        f["actions"] = np.array(acts, np.float32)
        f["rewards"] = np.array(rews, np.float32)
        f["terminals"] = np.array(terms)
        f["timeouts"] = np.array(touts)
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_linear_system(tmp_path_factory.mktemp("data") / "linear.hdf5")


def losses(run_dir: Path) -> dict[int, float]:
    """step -> train/loss; a step logged twice (before a kill and after resume) keeps the later one."""
    out = {}
    for line in open(run_dir / METRICS_FILE):
        row = json.loads(line)
        if "train/loss" in row:
            out[row["step"]] = row["train/loss"]
    return out


def test_tiny_run_writes_everything_and_learns_dynamics(dataset, tmp_path):
    run = tmp_path / "run"
    cfg = load_config(RunConfig, None, TINY + [f"data.path={dataset}", f"train.run_dir={run}",
                                               "train.steps=300", "train.val_every=300", "train.save_every=100",
                                               "train.keep_last=2", "train.lr=3e-3"])
    result = train(cfg, progress=False)
    assert result.step == 300 and not result.interrupted
    assert (run / "config.yaml").exists() and list(run.glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_00000200", "step_00000300"]
    ck = load_checkpoint(run)
    assert ck.step == 300 and ck.metadata["stats"]["states"]["count"] > 0
    assert ck.metadata["dataset"]["sha256"] and ck.metadata["model"]["window"] == 4
    trace = losses(run)
    assert np.mean([trace[s] for s in range(1, 11)]) > 2 * np.mean([trace[s] for s in range(291, 301)])
    # Forward and inverse dynamics of a linear system: far better than predicting the mean.
    assert result.val["fd"]["ratio"] < 0.5 and result.val["id"]["ratio"] < 0.8
    scalars = json.loads((run / METRICS_FILE).read_text().splitlines()[-1])
    assert {"val/fd_mse", "val/fd_baseline_mse", "val/id_ratio", "val/bc_mse"} <= set(scalars)


_KILL_AFTER_LOG = """
import os, signal, sys
from mtm.config import RunConfig, load_config
from mtm.training import loop, metrics
kill_at = int(sys.argv[1])
original = metrics.Logger.scalars
def scalars(self, step, values):
    original(self, step, values)
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
metrics.Logger.scalars = scalars
loop.train(load_config(RunConfig, None, sys.argv[2:]), progress=False)
"""


def train_full_and_killed(overrides: list[str], tmp_path: Path) -> tuple[Path, Path, int]:
    """30 deterministic steps (checkpoints every 10) run whole, and run again in a process killed
    by SIGKILL right after it logs step 25. Returns both run directories and the kill's exit code."""
    common = TINY + ["train.steps=30", "train.save_every=10", "train.val_every=0", "train.deterministic=true",
                     "model.dropout=0.1", *overrides]
    full, killed = tmp_path / "full", tmp_path / "killed"
    train(load_config(RunConfig, None, common + [f"train.run_dir={full}"]), progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _KILL_AFTER_LOG, "25", *common, f"train.run_dir={killed}"],
                          env=env, cwd=REPO)
    return full, killed, proc.returncode


def test_resume_after_kill_9_repeats_the_uninterrupted_losses(dataset, tmp_path):
    full, killed, returncode = train_full_and_killed([f"data.path={dataset}"], tmp_path)
    assert returncode == -9  # killed after logging step 25, five steps past checkpoint 20
    assert load_checkpoint(killed).step == 20
    assert max(losses(killed)) == 25

    cfg = load_config(RunConfig, killed / "config.yaml", [])
    result = train(cfg, resume=killed, progress=False)
    assert result.step == 30
    expected, resumed = losses(full), losses(killed)
    assert [resumed[s] for s in range(1, 31)] == [expected[s] for s in range(1, 31)]



_SIGTERM_AFTER_LOG = """
import os, signal, sys
from mtm.cli import main
from mtm.training import metrics
stop_at = int(sys.argv[1])
original = metrics.Logger.scalars
def scalars(self, step, values):
    original(self, step, values)
    if step == stop_at:
        os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler sends before it preempts a job
metrics.Logger.scalars = scalars
main(["train", *[a for o in sys.argv[2:] for a in ("--set", o)]], prog_name="mtm")
"""


def test_sigterm_saves_at_the_step_boundary_and_the_resume_repeats_the_uninterrupted_losses(dataset, tmp_path):
    common = TINY + [f"data.path={dataset}", "train.steps=30", "train.save_every=10", "train.val_every=0",
                     "train.deterministic=true", "model.dropout=0.1"]
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    train(load_config(RunConfig, None, common + [f"train.run_dir={full}"]), progress=False)
    proc = subprocess.run([sys.executable, "-c", _SIGTERM_AFTER_LOG, "25", *common, f"train.run_dir={stopped}"],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 143, proc.stderr  # 128 + SIGTERM, as a shell reports it
    assert f"terminated (SIGTERM): continue with  mtm train --resume {stopped}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert load_checkpoint(stopped).step == 25  # saved at the boundary, not lost back to checkpoint 20
    result = train(load_config(RunConfig, stopped / "config.yaml", []), resume=stopped, progress=False)
    assert result.step == 30
    expected, resumed = losses(full), losses(stopped)
    assert [resumed[s] for s in range(1, 31)] == [expected[s] for s in range(1, 31)]

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_processes_train_and_checkpoint(dataset, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "mtm", "train", "--no-progress", "--data", str(dataset), "--run-dir", str(run)]
    for item in TINY + ["train.steps=12", "train.save_every=6", "train.val_every=6"]:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ck = load_checkpoint(run)
    assert ck.step == 12
    # Only rank 0 logs: one metrics row per logged step, not two.
    steps = [json.loads(line)["step"] for line in open(run / METRICS_FILE) if "train/loss" in line]
    assert steps == list(range(1, 13))
    assert proc.stdout.count("checkpoint:") == 1  # only rank 0 reports


def test_divergence_stops_with_last_good_checkpoint(dataset, tmp_path):
    run = tmp_path / "nan"
    cfg = load_config(RunConfig, None, TINY + [f"data.path={dataset}", f"train.run_dir={run}", "train.steps=50",
                                               "train.lr=1e30", "train.warmup_steps=0", "train.grad_clip=0",
                                               "train.save_every=1", "train.val_every=0"])
    with pytest.raises(TrainingDiverged, match=r"NaN/inf .*step_00000001 is the last good checkpoint"):
        train(cfg, progress=False)
    ck = load_checkpoint(run)
    assert ck.step == 1
    assert all(np.isfinite(v.float().numpy()).all() for v in ck.model_state.values())


def test_cli_errors_are_one_line(dataset, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["train", "--set", "train.lrr=1"])
    assert r.exit_code == 1 and "train.lrr" in r.output and "did you mean" in r.output.lower()
    r = runner.invoke(main, ["train", "--config", "nosuch"])
    assert r.exit_code == 1 and "small" in r.output and "reference" in r.output
    r = runner.invoke(main, ["train", "--set", "train.steps=1"])
    assert r.exit_code == 1 and "no dataset given" in r.output
    r = runner.invoke(main, ["train", "--resume", str(tmp_path)])
    assert r.exit_code == 1 and "not a run directory" in r.output
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("x")
    r = runner.invoke(main, ["train", "--data", str(dataset), "--run-dir", str(occupied)])
    assert r.exit_code == 1 and "--overwrite" in r.output and (occupied / "keep.txt").exists()


@pytest.mark.parametrize("kind,task", [("mlp_bc", "bc"), ("mlp_rcbc", "rcbc")])
def test_mlp_baselines_train_checkpoint_and_act_through_the_same_path(dataset, tmp_path, kind, task):
    from mtm.policy import MTMPolicy, load_model

    run = tmp_path / kind
    cfg = load_config(RunConfig, None, TINY + [f"data.path={dataset}", f"train.run_dir={run}", f"model.kind={kind}",
                                               "train.steps=200", "train.val_every=200", "train.lr=3e-3"])
    result = train(cfg, progress=False)
    assert set(result.val) == {task} and result.val[task]["ratio"] < 0.8
    rows = [json.loads(line) for line in open(run / METRICS_FILE) if "train/loss" in line]
    assert set(k for k in rows[0] if k.startswith("train/loss_")) == {"train/loss_actions"}
    ck = load_checkpoint(run)
    model = load_model(ck)
    assert type(model).__name__ == "MLPPolicyModel" and model.config.kind == kind
    policy = MTMPolicy(model, ck.metadata, num_envs=2)
    assert policy.mode == task
    policy.reset()
    assert policy.act(np.zeros((2, 4), np.float32)).shape == (2, 2)
    other = "bc" if task == "rcbc" else "rcbc"
    with pytest.raises(Exception, match="acts in mode|needs a model trained with return"):
        MTMPolicy(model, ck.metadata, mode=other)


def _one_step_episodes(path: Path, episodes: int = 60) -> Path:
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f["observations"] = rng.normal(size=(episodes, 3)).astype(np.float32)
        f["actions"] = rng.normal(size=(episodes, 2)).astype(np.float32)
        f["rewards"] = rng.normal(size=episodes).astype(np.float32)
        f["terminals"] = np.ones(episodes, bool)
        f["timeouts"] = np.zeros(episodes, bool)
    return path


@pytest.mark.parametrize("episodes, message", [
    (60, "no validation: the 6 held-out episodes have at most 1 step, and a 4-step window needs 3 real steps "
         "for any prediction to be scored; use longer episodes or a shorter data.window"),
    (1, "no validation: the dataset has 1 episode, none can be held out"),
])
def test_training_without_any_possible_validation_says_so(tmp_path, episodes, message):
    data = _one_step_episodes(tmp_path / "short.hdf5", episodes)
    args = ["train", "--no-progress", "--data", str(data), "--run-dir", str(tmp_path / "run")]
    for item in TINY + ["train.steps=3", "train.warmup_steps=1", "train.val_every=3"]:
        args += ["--set", item]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert [line for line in r.stderr.splitlines() if line.startswith("warning:")] == [f"warning: {message}"]
    assert "validation (held-out episodes" not in r.stdout

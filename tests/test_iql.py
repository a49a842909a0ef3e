"""The IQL baseline (model.kind = mlp_iql, mtm.model.iql): it prefers the better of two actions the
data shows where BC averages them, its transitions respect episode ends (a fall is terminal, a
timeout is not), its checkpoints round-trip and resume exactly, and bad configs give one line."""

import json
import os
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mtm.checkpoint import load_checkpoint
from mtm.cli import main
from mtm.config import RunConfig, load_config, resolve_config_path
from mtm.data.trajectories import load_trajectories
from mtm.data.windows import WindowSampler
from mtm.model.iql import IQL_KIND, TRANSITION_KEYS, IQLModel
from mtm.model.network import ModelConfig
from mtm.model.tokenizers import build_tokenizers
from mtm.model.tokenizers.build import TokenConfig
from mtm.training.loop import train
from mtm.training.rundir import METRICS_FILE
from test_formats_d4rl import d4rl_arrays, write_d4rl

GOOD, BAD = 0.8, -0.8

TINY_IQL = ["model.width=64", "train.batch_size=128", "train.lr=3e-3", "train.log_every=50", "train.val_every=0",
            "train.save_every=0", "train.device=cpu", "model.iql_normalize_reward=false"]


def write_two_actions(path: Path, n: int = 400, seed: int = 0) -> Path:
    """One-step episodes that end by termination, all from the same state: half take GOOD (reward
    1), half BAD (reward 0). The mean action (what BC learns) is 0."""
    rng = np.random.default_rng(seed)
    good = np.arange(n) % 2 == 0
    actions = np.where(good, GOOD, BAD)[:, None] + rng.normal(0, 0.01, (n, 1))
    with h5py.File(path, "w") as f:
        f["observations"] = np.ones((n, 3), np.float32)
        f["actions"] = actions.astype(np.float32)
        f["rewards"] = good.astype(np.float32)
        f["terminals"] = np.ones(n, bool)
        f["timeouts"] = np.zeros(n, bool)
    return path


def train_stopped_and_resumed(cfg: RunConfig, run: Path, stop: int, steps: int) -> None:
    """Train `cfg` into `run`, Ctrl-C (SIGINT) when step `stop` of `steps` is logged (the run saves
    a checkpoint and stops there), then resume it to the end."""
    def ctrl_c(line: str) -> None:
        if f"step {stop}/{steps}" in line:
            os.kill(os.getpid(), signal.SIGINT)

    assert train(cfg, progress=False, say=ctrl_c).step == stop
    train(cfg, resume=run, progress=False, say=None)


def logged_losses(run: Path) -> dict[int, float]:
    """{step: train/loss} of a run's metrics file."""
    return {row["step"]: row["train/loss"] for row in map(json.loads, open(run / METRICS_FILE)) if "train/loss" in row}


def iql_config(data: Path, run: Path, *extra: str) -> RunConfig:
    return load_config(RunConfig, resolve_config_path("mlp-iql"), TINY_IQL + [f"data.path={data}", f"train.run_dir={run}", *extra])


def test_iql_chooses_the_good_action_where_bc_averages_the_two(tmp_path):
    from mtm.policy import load_model

    data = write_two_actions(tmp_path / "two.hdf5")
    states = torch.ones(1, 2, 3)
    iql = train(iql_config(data, tmp_path / "iql", "train.steps=300"), progress=False, say=None)
    bc = train(load_config(RunConfig, resolve_config_path("mlp-bc"), [f"data.path={data}", f"train.run_dir={tmp_path / 'bc'}",
                                                 "data.window=1", "train.steps=300", "train.warmup_steps=10",
                                                 "train.val_every=0", "train.device=cpu"]),
               progress=False, say=None)
    iql_actions = load_model(load_checkpoint(iql.run_dir)).predict({"states": states})["actions"]
    bc_actions = load_model(load_checkpoint(bc.run_dir)).predict({"states": states[:, :1]})["actions"]
    assert bc_actions.abs().max() < 0.1  # BC: the average of the two, near 0
    # IQL: V is the 0.7-expectile of Q in {0, 1} (0.7), the advantages +0.3 and -0.7 weigh the good
    # action exp(3 * 1.0) = 20 times more, so the actor sits near GOOD: (20 * 0.8 - 0.8) / 21 = 0.72.
    assert 0.6 < iql_actions.min() and iql_actions.max() < GOOD, iql_actions


def test_loss_parts_are_logged_and_the_actor_alone_follows_the_schedule(tmp_path):
    data = write_two_actions(tmp_path / "two.hdf5", n=100)
    run = tmp_path / "run"
    train(iql_config(data, run, "train.steps=100"), progress=False, say=None)
    rows = [json.loads(line) for line in open(run / METRICS_FILE) if "train/loss" in line]
    assert {k for k in rows[0] if k.startswith("train/loss_")} == {"train/loss_q", "train/loss_v", "train/loss_actor"}
    assert all(np.isfinite(row[k]) for row in rows for k in row)
    state = load_checkpoint(run).load_train_state()
    groups = state["optimizer"]["param_groups"]
    assert [bool(g.get("constant_lr")) for g in groups] == [False, True]
    assert groups[0]["lr"] == pytest.approx(0.0, abs=1e-9) and groups[1]["lr"] == pytest.approx(3e-3)


def _tiny_model(data_path: Path, **config) -> tuple[IQLModel, object]:
    data = load_trajectories(data_path)
    tokenizers = build_tokenizers(TokenConfig(use_returns=False), data.stats())
    model = IQLModel(ModelConfig(kind=IQL_KIND, width=16, mlp_layers=1, **config), tokenizers, window=2)
    model.fit_to_data(data)
    return model, data


def test_transitions_end_at_a_fall_and_drop_a_timeout_or_cut_short_last_step(tmp_path):
    # Three episodes in nine rows: rows 0-2 end by termination, rows 3-6 by timeout, rows 7-8 are cut short.
    path = write_d4rl(tmp_path / "d.hdf5", d4rl_arrays(obs_dim=2, act_dim=1))
    model, data = _tiny_model(path)
    assert data.arrays["terminals"][:, 0].tolist() == [0, 0, 1, 0, 0, 0, 0, 0, 0]
    sampler = WindowSampler(data, 2, keys=TRANSITION_KEYS, every_step=True)
    assert len(sampler) == data.num_steps  # a transition starts at every step
    batch = sampler.windows(torch.arange(len(sampler)))
    t = model.transitions(batch)
    assert t["done"].tolist() == [0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert t["keep"].tolist() == [True, True, True, True, True, True, False, True, False]
    # s' is the next row of the same episode (rows hold their index), never one across a boundary.
    raw_next = batch["states"][:, 1, 0]
    assert raw_next[t["keep"] & (t["done"] == 0)].tolist() == [1, 2, 4, 5, 6, 8]
    # The Q target bootstraps from V(s') except after the fall, whatever V(s') says there.
    with torch.no_grad():
        for p in model.critic.v.parameters():
            p.zero_()
        model.critic.v[-1].bias.fill_(50.0)
    loss, parts = model.training_loss(batch)
    assert torch.isfinite(loss)
    r = t["r"]
    q_target = r + 0.99 * (1 - t["done"]) * 50.0
    with torch.no_grad():
        sa = torch.cat([t["s"], t["a"]], -1)
        q1, q2 = model.critic.q1(sa)[:, 0], model.critic.q2(sa)[:, 0]
        expected = (((q1 - q_target) ** 2 + (q2 - q_target) ** 2) / 2)[t["keep"]].mean()
    assert parts["q"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_reward_scale_follows_the_return_range_and_can_be_turned_off(tmp_path):
    path = write_d4rl(tmp_path / "d.hdf5", d4rl_arrays(obs_dim=2, act_dim=1))
    model, data = _tiny_model(path)
    returns = data.episode_returns()  # 0+1+2, 3+4+5+6, 7+8
    assert model.reward_scale.item() == pytest.approx(1000 / (returns.max() - returns.min()))
    off, _ = _tiny_model(path, iql_normalize_reward=False)
    assert off.reward_scale.item() == 1.0


def test_checkpoint_round_trip_policy_and_exact_resume(tmp_path):
    from mtm.policy import MTMPolicy, load_model

    data = write_two_actions(tmp_path / "two.hdf5", n=100)
    straight = tmp_path / "straight"
    train(iql_config(data, straight, "train.steps=40", "train.log_every=10", "model.iql_deterministic=false"),
          progress=False, say=None)
    ck = load_checkpoint(straight)
    model = load_model(ck)
    assert isinstance(model, IQLModel) and model.config.kind == IQL_KIND and model.log_std is not None
    saved = ck.model_state
    assert set(saved) == set(model.state_dict())
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert {"critic.q1_target.0.weight", "reward_scale", "action_low", "action_high"} <= set(saved)
    policy = MTMPolicy(model, ck.metadata, num_envs=2)
    assert policy.mode == "bc"
    policy.reset()
    obs = np.array([[0.1, -0.2, 0.3], [1.0, 0.5, -1.0]], np.float32)
    expected = model.predict({"states": torch.as_tensor(obs)[:, None]})["actions"][:, 0].numpy()
    np.testing.assert_allclose(policy.act(obs), expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(Exception, match="acts in mode bc only|needs a model trained with return tokens"):
        MTMPolicy(model, ck.metadata, mode="rcbc")

    # Stopped at step 20 (Ctrl-C saves and stops) and resumed: the same losses as the straight run
    # (target Q, optimiser, the actor's schedule and Q's constant rate all restored).
    halves = tmp_path / "halves"
    cfg = iql_config(data, halves, "train.steps=40", "train.log_every=10", "model.iql_deterministic=false")

    train_stopped_and_resumed(cfg, halves, 20, 40)
    assert logged_losses(halves) == pytest.approx(logged_losses(straight), rel=1e-6)


def _one_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    return errors[0]


@pytest.mark.parametrize("setting, message", [
    ("data.window=4", "model.kind=mlp_iql learns from (s, a, r, s') transitions: set data.window=2, got 4"),
    ("model.iql_expectile=1.0", "iql_expectile must be in (0, 1), got 1.0"),
    ("model.iql_beta=0", "iql_beta must be > 0"),
    ("model.iql_discount=1.5", "iql_discount must be in (0, 1], got 1.5"),
    ("model.iql_polyak=0", "iql_polyak must be in (0, 1], got 0"),
])
def test_bad_iql_configs_give_one_error_line(tmp_path, setting, message):
    data = write_two_actions(tmp_path / "two.hdf5", n=20)
    r = CliRunner().invoke(main, ["train", "--config", "mlp-iql", "--data", str(data), "--run-dir",
                                  str(tmp_path / "run"), "--set", "train.steps=2", "--set", setting])
    assert message in _one_error(r)
    assert not (tmp_path / "run").exists()


def test_data_without_rewards_gives_one_error_line(tmp_path):
    arrays = d4rl_arrays(obs_dim=2, act_dim=1)
    del arrays["rewards"]
    data = write_d4rl(tmp_path / "no_rewards.hdf5", arrays)
    r = CliRunner().invoke(main, ["train", "--config", "mlp-iql", "--data", str(data), "--run-dir",
                                  str(tmp_path / "run"), "--set", "train.steps=2"])
    assert "no training episode has rewards; model.kind=mlp_iql (IQL) learns a value from them" in _one_error(r)


def test_iql_computes_in_fp32_under_a_bf16_autocast(tmp_path):
    # train.precision auto means bf16 on CPUs that multiply it natively; IQL's values must not be rounded to it.
    model, data = _tiny_model(write_d4rl(tmp_path / "d.hdf5", d4rl_arrays(obs_dim=2, act_dim=1)))
    batch = WindowSampler(data, 2, keys=TRANSITION_KEYS, every_step=True).windows(torch.arange(data.num_steps))
    loss, _ = model.training_loss(batch)
    actions = model.predict(batch)["actions"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_bf16, _ = model.training_loss(batch)
        actions_bf16 = model.predict(batch)["actions"]
    assert loss_bf16.dtype == actions_bf16.dtype == torch.float32
    assert loss_bf16.item() == loss.item() and torch.equal(actions_bf16, actions)


@pytest.mark.parametrize("asked", ["auto", "bf16"])
def test_training_and_the_policy_report_the_fp32_iql_runs_at(tmp_path, native_bf16, asked):
    # On a CPU where auto means bf16, IQL still computes in fp32, and says so rather than "bf16".
    from mtm.policy import MTMPolicy, load_model

    data = write_two_actions(tmp_path / "two.hdf5", n=60)
    lines: list[str] = []
    train(iql_config(data, tmp_path / "run", "train.steps=2", f"train.precision={asked}"), progress=False,
          say=lines.append)
    assert any(line.startswith("device cpu, precision fp32 (the model computes in fp32 whatever is asked: IQL")
               for line in lines), lines
    ck = load_checkpoint(tmp_path / "run")
    policy = MTMPolicy(load_model(ck), ck.metadata, num_envs=2, precision=asked)
    assert policy.precision.dtype == "fp32" and "IQL's Q and V" in policy.precision.reason

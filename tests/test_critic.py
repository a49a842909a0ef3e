"""The IQL critic an MTM trains beside its Transformer (model.critic, mtm.model.critic) and the
planner's q score: transitions inside windows respect episode ends, the TD loss is IQL's, the
critic prefers the better of two actions the data shows, its updates stay out of the Transformer's
gradient clipping and optimiser state, checkpoints round-trip and resume exactly, and `--mode plan`
scores by its Q."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mtm.checkpoint import load_checkpoint
from mtm.cli import main
from mtm.config import RunConfig, load_config, resolve_config_path
from mtm.errors import ConfigError
from mtm.evaluation.predictions import predict
from mtm.model.critic import TwinCritic, reward_scale, window_transitions
from mtm.model.iql import IQL_KIND, IQLModel
from mtm.model.network import MTM, ModelConfig
from mtm.planning import DEFAULT_TEMPERATURE, Planner
from mtm.policy import load_model
from mtm.policy_config import PolicyConfig
from mtm.training.loop import train
from test_iql import GOOD, logged_losses, train_stopped_and_resumed, write_two_actions
from test_planning import A, L, S, planner, tokenizers

TINY_MTM = ["model.width=32", "model.heads=2", "model.critic=true", "model.critic_width=32", "train.batch_size=64",
            "train.lr=3e-3", "train.warmup_steps=10", "train.log_every=25", "train.val_every=0",
            "train.save_every=0", "train.device=cpu", "train.precision=fp32", "model.iql_normalize_reward=false"]


def mtm_config(data, run, *extra: str) -> RunConfig:
    return load_config(RunConfig, resolve_config_path("small"), TINY_MTM + [f"data.path={data}", f"train.run_dir={run}",
                                                                          *extra])


def identity(x):
    return x.float()


# --------------------------------------------------------------------------------------------------
# Transitions inside windows, and the TD loss


def test_window_transitions_end_at_a_fall_and_drop_a_timeout():
    # Four windows of three steps: whole; an episode that falls at its 2nd step; one that times out
    # at its 2nd step; and one without rewards.
    b, steps = 4, 3
    states = torch.arange(b * steps, dtype=torch.float32).view(b, steps, 1)
    batch = {"states": states, "actions": -states, "rewards": states + 0.5,
             "valid": torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool),
             "terminals": torch.tensor([[0, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.float32)[..., None],
             "present_rewards": torch.tensor([True, True, True, False])}
    t = window_transitions(batch, identity, identity, torch.tensor(2.0))
    keep = t["keep"].view(b, steps).tolist()
    assert keep == [[True, True, False],  # the window's last step has no successor inside it
                    [True, True, False],  # the fall counts (done), no successor needed
                    [True, False, False],  # the timed-out last step has no s': dropped
                    [False, False, False]]  # no rewards, nothing to learn from
    assert t["done"].view(b, steps)[1].tolist() == [0, 1, 0]
    kept = t["keep"] & (t["done"] == 0)
    torch.testing.assert_close(t["s_next"][kept, 0], t["s"][kept, 0] + 1)  # the next step of the same window
    torch.testing.assert_close(t["r"], (states + 0.5).flatten() * 2.0)
    torch.testing.assert_close(t["a"], -t["s"])


def test_the_critic_loss_is_iqls_td_loss():
    torch.manual_seed(0)
    critic = TwinCritic(2, 1, 8, 1, expectile=0.7, discount=0.9, polyak=0.005)
    n = 6
    t = {"s": torch.randn(n, 2), "a": torch.randn(n, 1), "r": torch.randn(n), "s_next": torch.randn(n, 2),
         "done": torch.tensor([0, 1, 0, 0, 1, 0.0]), "keep": torch.tensor([True, True, True, False, True, True])}
    with torch.no_grad():
        for p in critic.v.parameters():
            p.zero_()
        critic.v[-1].bias.fill_(5.0)  # V = 5 everywhere
    q_loss, v_loss, advantage = critic.losses(t)
    sa = torch.cat([t["s"], t["a"]], -1)
    with torch.no_grad():
        target = t["r"] + 0.9 * (1 - t["done"]) * 5.0  # bootstraps except after a fall
        q1, q2 = critic.q1(sa)[:, 0], critic.q2(sa)[:, 0]
        want_q = (((q1 - target) ** 2 + (q2 - target) ** 2) / 2)[t["keep"]].mean()
        tq = torch.minimum(critic.q1_target(sa), critic.q2_target(sa))[:, 0]
        u = tq - 5.0
        want_v = (torch.where(u < 0, 0.3, 0.7) * u ** 2)[t["keep"]].mean()
    torch.testing.assert_close(q_loss, want_q)
    torch.testing.assert_close(v_loss, want_v)
    torch.testing.assert_close(advantage, tq - 5.0)
    # The target Qs start as copies and move polyak of the way after an update.
    before = critic.q1_target[0].weight.clone()
    with torch.no_grad():
        critic.q1[0].weight.add_(1.0)
    critic.update_targets()
    torch.testing.assert_close(critic.q1_target[0].weight, before + 0.005)


def test_an_ensemble_critic_acts_and_bootstraps_on_the_minimum_of_its_qs():
    torch.manual_seed(0)
    critic = TwinCritic(2, 1, 8, 1, expectile=0.7, discount=0.9, polyak=0.5, qs=4)
    s, a = torch.randn(5, 2), torch.randn(5, 1)
    sa = torch.cat([s, a], -1)
    targets = [critic.q1_target, critic.q2_target, *critic.extra_q_target]
    with torch.no_grad():
        want = torch.stack([q(sa)[:, 0] for q in targets]).amin(0)
    torch.testing.assert_close(critic.target_q(s, a), want)
    t = {"s": s, "a": a, "r": torch.randn(5), "s_next": torch.randn(5, 2), "done": torch.zeros(5),
         "keep": torch.ones(5, dtype=torch.bool)}
    q_loss, _, _ = critic.losses(t)
    with torch.no_grad():
        target = t["r"] + 0.9 * critic.v(t["s_next"])[:, 0]
        online = [critic.q1, critic.q2, *critic.extra_q]
        torch.testing.assert_close(q_loss, sum(((q(sa)[:, 0] - target) ** 2).mean() for q in online) / 4)
        critic.extra_q[1][0].weight.add_(2.0)
    before = critic.extra_q_target[1][0].weight.clone()
    critic.update_targets()  # every target follows its own Q
    torch.testing.assert_close(critic.extra_q_target[1][0].weight, before + 1.0)
    names = set(critic.state_dict())
    assert {"q1.0.weight", "q2_target.0.weight", "extra_q.1.0.weight", "extra_q_target.1.0.weight"} <= names
    with pytest.raises(ValueError, match="at least 2 Q networks"):
        TwinCritic(2, 1, 8, 1, expectile=0.7, discount=0.9, polyak=0.5, qs=1)


def test_reward_scale_is_iqls_and_ignores_episodes_without_rewards():
    assert reward_scale(np.array([10.0, 60.0, np.nan])) == pytest.approx(1000 / 50)
    assert reward_scale(np.array([10.0, 60.0]), normalize=False) == 1.0
    assert reward_scale(np.array([3.0, 3.0])) == 1.0  # no range: unscaled
    assert reward_scale(np.array([np.nan])) == 1.0


# --------------------------------------------------------------------------------------------------
# The model


def test_a_critic_needs_continuous_states_and_actions_and_a_positive_update_count():
    with pytest.raises(ConfigError, match="model.critic needs continuous states and actions"):
        MTM(ModelConfig(width=16, heads=2, critic=True), {k: v for k, v in tokenizers().items() if k != "actions"}, L)
    with pytest.raises(ValueError, match="critic_updates must be >= 1, got 0"):
        ModelConfig(critic=True, critic_updates=0)
    with pytest.raises(ValueError, match="critic_qs must be >= 2, got 1"):
        ModelConfig(critic=True, critic_qs=1)
    assert not MTM(ModelConfig(width=16, heads=2), tokenizers(), L).has_critic


def test_a_critic_changes_no_initial_transformer_weight_and_starts_its_targets_as_copies():
    torch.manual_seed(3)
    plain = MTM(ModelConfig(width=16, heads=2), tokenizers(), L)
    torch.manual_seed(3)
    with_critic = MTM(ModelConfig(width=16, heads=2, critic=True, critic_qs=3), tokenizers(), L)
    critic_state = {k for k in with_critic.state_dict() if k.startswith("critic.")}
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(with_critic.state_dict()[k], v, rtol=0, atol=0, msg=k)
    assert set(with_critic.state_dict()) - set(plain.state_dict()) == critic_state | {"reward_scale", "action_low",
                                                                                      "action_high"}
    c = with_critic.critic
    for q, target in ((c.q1, c.q1_target), (c.q2, c.q2_target), (c.extra_q[0], c.extra_q_target[0])):
        for p, t in zip(q.parameters(), target.parameters()):
            torch.testing.assert_close(t, p, rtol=0, atol=0)
    assert c.q1[0].weight.std() > 0.05  # PyTorch's default initialisation, as IQL's, not the Transformer's N(0, 0.02)


def test_a_model_with_a_critic_round_trips_its_q_and_reward_scale():
    model = MTM(ModelConfig(width=16, heads=2, critic=True, critic_width=8), tokenizers(), L).eval()
    model.reward_scale.fill_(3.5)
    assert model.outputs == ("states", "returns", "actions", "q", "v")
    again = MTM.from_spec(json.loads(json.dumps(model.spec()))).eval()
    again.load_state_dict(model.state_dict())
    s, a = torch.randn(5, S), torch.randn(5, A)
    torch.testing.assert_close(again.q_value(s, a), model.q_value(s, a))
    assert float(again.reward_scale) == 3.5 and model.q_value(s, a).shape == (5,)


def test_an_iql_checkpoint_from_before_the_shared_critic_still_loads():
    toks = {k: v for k, v in tokenizers().items() if k != "returns"}
    model = IQLModel(ModelConfig(kind=IQL_KIND, width=16, mlp_layers=1), toks, window=2)
    old = {k.removeprefix("critic."): v for k, v in model.state_dict().items()}
    assert "q1_target.0.weight" in old and "v.0.bias" in old
    again = IQLModel(ModelConfig(kind=IQL_KIND, width=16, mlp_layers=1), toks, window=2)
    again.load_state_dict(old)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v)


# --------------------------------------------------------------------------------------------------
# Training, and planning by Q


@pytest.fixture(scope="module")
def two_action_run(tmp_path_factory):
    """An MTM with a critic trained on one-step episodes that take GOOD (reward 1) or BAD (reward 0)."""
    root = tmp_path_factory.mktemp("critic")
    data = write_two_actions(root / "two.hdf5")
    run = root / "run"
    train(mtm_config(data, run, "train.steps=150", "model.critic_updates=2", "model.iql_polyak=0.05"),
          progress=False, say=None)
    return run


def test_the_critic_learns_that_the_good_action_is_worth_more(two_action_run):
    model = load_model(load_checkpoint(two_action_run))
    assert model.has_critic
    s = torch.ones(3, 3)
    q = model.q_value(s, torch.tensor([[GOOD], [0.0], [-GOOD]]))
    # Q(s, GOOD) -> 1 and Q(s, BAD) -> 0 (one-step episodes: no bootstrap)
    assert q[0] > 0.8 and q[2] < 0.2 and q[0] > q[1] > q[2], q


def test_the_planner_scored_by_q_moves_a_poor_proposal_to_the_good_action(two_action_run):
    model = load_model(load_checkpoint(two_action_run))
    config = PolicyConfig(mode="plan", plan_candidates=64, plan_noise=1.0, plan_temperature=1e-3)
    low, high = torch.full((1,), -1.0), torch.full((1,), 1.0)
    plan = Planner(model, config, low, high, num_envs=2)
    assert plan.score_by == "q" and plan.describe()["scored_by"].startswith("critic's Q")
    batch = {"states": torch.ones(2, model.window, 3), "actions": torch.zeros(2, model.window, 1),
             "returns": torch.zeros(2, model.window, 1)}
    chosen = plan(batch, torch.tensor([0, 0]), torch.zeros(2, 1))  # the proposal: BC's average, 0
    assert (chosen[:, 0] > 0.5).all(), chosen
    # The scores are Q in return-token units: (1 - discount) / reward_scale times Q
    q = model.q_value(torch.ones(128, 3), plan.last_candidates.reshape(-1, 1))
    torch.testing.assert_close(plan.last_scores.reshape(-1), q * (1 - 0.99))


def test_critic_updates_leave_the_transformer_alone_and_out_of_grad_clipping(tmp_path):
    data = write_two_actions(tmp_path / "two.hdf5", n=100)
    run = tmp_path / "run"
    train(mtm_config(data, run, "train.steps=20", "model.critic_updates=3", "train.grad_clip=1e-6", "model.iql_polyak=1.0"),
          progress=False, say=None)
    state = load_checkpoint(run).load_train_state()["optimizer"]
    groups = state["param_groups"]
    assert [bool(g.get("constant_lr")) for g in groups] == [False, False, True]
    assert groups[2]["weight_decay"] == 0.0
    steps = {int(state["state"][i]["step"]) for g in groups[:2] for i in g["params"]}
    critic_steps = {int(state["state"][i]["step"]) for i in groups[2]["params"]}
    assert steps == {20} and critic_steps == {60}  # 1 + 2 extra critic updates a step
    rows = [json.loads(line) for line in open(run / "metrics.jsonl") if "train/loss" in line]
    assert {"train/loss_q", "train/loss_v"} <= set(rows[-1])
    # A clip of 1e-6 bounds the Transformer's steps, not the critic's: its Q moved towards the rewards.
    model = load_model(load_checkpoint(run))
    q = model.q_value(torch.ones(2, 3), torch.tensor([[GOOD], [-GOOD]]))
    assert q[0] - q[1] > 0.1, q


def test_a_run_with_a_critic_resumes_exactly(tmp_path):
    # Stopped at step 10 (Ctrl-C saves and stops) and resumed: the same losses and weights as the
    # straight run (target Qs, the extra updates' batches, the optimiser's per-group state restored).
    data = write_two_actions(tmp_path / "two.hdf5", n=100)
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    common = ("train.steps=20", "train.log_every=5", "model.critic_updates=2")
    train(mtm_config(data, straight, *common), progress=False, say=None)
    train_stopped_and_resumed(mtm_config(data, halves, *common), halves, 10, 20)
    assert logged_losses(halves) == pytest.approx(logged_losses(straight), rel=1e-6)
    a, b = load_checkpoint(straight).model_state, load_checkpoint(halves).model_state
    assert set(a) == set(b) and any(k.startswith("critic.q1_target") for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


# --------------------------------------------------------------------------------------------------
# The planner's choice of score


def test_scoring_by_q_needs_a_critic():
    with pytest.raises(ConfigError, match="plan_score 'q' needs a model with a critic"):
        planner(plan_score="q")


def test_plan_by_q_end_to_end_in_the_eval_command(reacher_run, tmp_path):
    run, out = tmp_path / "run", tmp_path / "report.json"
    train(mtm_config(reacher_run.parent / "reacher.hdf5", run, "train.steps=20", "data.rtg_horizon=50"),
          progress=False, say=None)
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(run), "--mode", "plan", "--episodes", "2",
                                       "--num-envs", "2", "--plan-horizon", "2", "--plan-candidates", "4",
                                       "--no-progress", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "scored by the critic's Q (IQL), mean over 2 steps" in result.output
    report = json.loads(out.read_text())
    assert report["plan"]["horizon"] == 2 and report["plan"]["scored_by"] == "critic's Q (IQL), mean over 2 steps"
    assert report["plan"]["temperature"] == DEFAULT_TEMPERATURE["q"] == 0.02  # 0.05 scored by values
    assert report["episodes"] == 2 and np.isfinite(report["normalized_score_mean"])


# --------------------------------------------------------------------------------------------------
# Advantage-weighted actions (model.awr_beta): IQL's actor inside the MTM


def test_awr_needs_a_critic_and_a_non_negative_beta():
    with pytest.raises(ValueError, match="awr_beta weighs actions by the critic's advantage: set model.critic=true"):
        ModelConfig(awr_beta=3.0)
    with pytest.raises(ValueError, match="awr_beta must be >= 0, got -1.0"):
        ModelConfig(critic=True, awr_beta=-1.0)


def test_action_weights_are_the_clipped_exponentiated_advantage_of_mean_one_over_real_steps():
    torch.manual_seed(0)
    model = MTM(ModelConfig(width=16, heads=2, critic=True, critic_width=8, awr_beta=2.0), tokenizers(), L).eval()
    batch = {"states": torch.randn(4, L, S), "actions": torch.rand(4, L, A) * 2 - 1,
             "valid": torch.ones(4, L, dtype=torch.bool)}
    batch["valid"][3, 2:] = False  # padding: weight 0, out of the mean
    s, a = model.critic_states(batch["states"]), model.critic_actions(batch["actions"])
    raw = torch.exp(2.0 * (model.critic.target_q(s, a) - model.critic.v(s)[..., 0]))
    expected = torch.where(batch["valid"], raw / raw[batch["valid"]].mean(), torch.zeros_like(raw))
    weights = model.action_weights(batch)
    torch.testing.assert_close(weights, expected)
    assert float(weights[batch["valid"]].mean()) == pytest.approx(1.0) and (weights[3, 2:] == 0).all()
    # A huge advantage is clipped at IQL's 100 before the mean is taken.
    model.critic.v[-1].bias.data.fill_(-1e3)
    weights = model.action_weights(batch)
    torch.testing.assert_close(weights[batch["valid"]], torch.ones(int(batch["valid"].sum())))


def test_awr_turns_the_average_of_a_good_and_a_bad_action_into_the_good_one(tmp_path):
    # One state, half the episodes take GOOD (reward 1), half BAD (reward 0): plain BC learns their
    # mean, 0; weighing each action by exp(3 A) pulls the MTM's BC action (returns hidden) to GOOD.
    data = write_two_actions(tmp_path / "two.hdf5")
    acts = {}
    for beta in (0.0, 3.0):
        run = tmp_path / f"beta{beta}"
        train(mtm_config(data, run, "train.steps=200", "model.critic_updates=2", "model.iql_polyak=0.05",
                         f"model.awr_beta={beta}"), progress=False, say=None)
        model = load_model(load_checkpoint(run)).eval()
        batch = {"states": torch.ones(1, model.window, 3), "actions": torch.zeros(1, model.window, 1),
                 "returns": torch.zeros(1, model.window, 1)}
        acts[beta] = float(predict(model, "bc", batch, c=0)[0, 0])
    assert abs(acts[0.0]) < 0.3 and acts[3.0] > 0.5, acts

"""Planning through the model's masks (mtm.planning, `--mode plan`) and the value head it scores with."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mtm.checkpoint import load_checkpoint
from mtm.cli import main
from mtm.errors import ConfigError
from mtm.model.loss import REWARD, expectile_loss, mtm_loss
from mtm.model.masks import POLICY_MASKS, TokenLayout, random_autoregressive_mask
from mtm.model.network import MTM, ModelConfig
from mtm.model.tokenizers import BinnedTokenizer, ContinuousTokenizer
from mtm.planning import Planner
from mtm.policy import MTMPolicy, load_model
from mtm.policy_config import POLICY_MODES, PolicyConfig

S, A, L = 3, 2, 2


def tokenizers():
    return {"states": ContinuousTokenizer(S, np.zeros(S), np.ones(S), name="states"),
            "returns": ContinuousTokenizer(1, [0.0], [1.0], name="returns"),
            "actions": ContinuousTokenizer(A, np.zeros(A), np.ones(A), name="actions")}


# --------------------------------------------------------------------------------------------------
# The value head


def test_expectile_loss_is_the_closed_form():
    u = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0])  # target - prediction
    for tau in (0.5, 0.7, 0.9):
        got = expectile_loss(torch.zeros(5), u, tau)
        want = torch.tensor([(1 - tau) * 4, (1 - tau) * 0.25, 0.0, tau * 0.25, tau * 4])
        torch.testing.assert_close(got, want)
    # Its minimiser over a constant is the tau-expectile: above the mean for tau > 0.5.
    data = torch.tensor([0.0, 0.0, 0.0, 10.0])
    grid = torch.linspace(0.0, 10.0, 10001)
    c = grid[expectile_loss(grid[:, None], data[None, :], 0.9).mean(1).argmin()]
    assert float(c) == pytest.approx(0.9 * 10 / (0.9 + 3 * 0.1), abs=1e-3)  # 7.5, the mean is 2.5


def test_the_value_head_is_trained_on_hidden_returns_only():
    torch.manual_seed(0)
    model = MTM(ModelConfig(width=16, heads=2, dropout=0.0, value_expectile=0.7), tokenizers(), L)
    assert model.has_value and model.outputs == ("states", "returns", "actions", "value")
    b = 64
    batch = {"states": torch.randn(b, L, S), "actions": torch.randn(b, L, A), "returns": torch.randn(b, L, 1)}
    visible = random_autoregressive_mask(model.layout, b, torch.Generator().manual_seed(0))
    out = model(batch, visible)
    total, parts = mtm_loss(out, batch, model.tokenizers, visible, None, value_expectile=0.7)
    hidden = ~visible[:, model.layout.slice("returns")]
    target, head = batch["returns"][..., 0], out["value"][:, :, 0, 0]
    want = expectile_loss(head[hidden], target[hidden], 0.7).sum() / hidden.sum()
    torch.testing.assert_close(parts["value"], want)
    torch.testing.assert_close(total, sum(parts.values()))
    with pytest.raises(ConfigError, match="expectile in"):
        mtm_loss(out, batch, model.tokenizers, visible, None)  # a value head needs its tau


def test_value_expectile_is_checked_and_needs_returns():
    with pytest.raises(ValueError, match=r"value_expectile must be 0 \(no value head\) or in \(0, 1\), got 1.0"):
        ModelConfig(value_expectile=1.0)
    toks = {k: v for k, v in tokenizers().items() if k != "returns"}
    with pytest.raises(ConfigError, match="value_expectile needs return tokens"):
        MTM(ModelConfig(width=16, heads=2, value_expectile=0.7), toks, L)


def test_a_model_with_a_value_head_round_trips_through_its_spec():
    model = MTM(ModelConfig(width=16, heads=2, value_expectile=0.7), tokenizers(), L).eval()
    again = MTM.from_spec(json.loads(json.dumps(model.spec()))).eval()
    again.load_state_dict(model.state_dict())
    batch = {"states": torch.randn(3, L, S), "actions": torch.randn(3, L, A), "returns": torch.randn(3, L, 1)}
    visible = torch.ones(model.layout.num_tokens, dtype=torch.bool)
    torch.testing.assert_close(model.predict(batch, visible)["value"], again.predict(batch, visible)["value"])


# --------------------------------------------------------------------------------------------------
# The reward head


def test_the_reward_head_loss_is_the_closed_form_on_real_steps_with_rewards():
    torch.manual_seed(0)
    model = MTM(ModelConfig(width=16, heads=2, dropout=0.0, reward_head=True), tokenizers(), L)
    model.set_reward_stats(2.0, 0.5)
    assert model.has_reward and model.outputs == ("states", "returns", "actions", REWARD)
    b = 8
    batch = {"states": torch.randn(b, L, S), "actions": torch.randn(b, L, A), "returns": torch.randn(b, L, 1),
             "rewards": 2.0 + torch.randn(b, L, 1), "present_rewards": torch.arange(b) % 4 != 0}
    valid = torch.ones(b, L, dtype=torch.bool)
    valid[1, 1] = False  # a padded step
    batch["rewards"][1, 1] = float("nan")  # whatever padding holds never reaches the loss
    visible = random_autoregressive_mask(model.layout, b, torch.Generator().manual_seed(0))
    out = model(batch, visible, valid)
    total, parts = mtm_loss(out, batch, model.tokenizers, visible, valid, reward_units=model.reward_units)
    use = valid & batch["present_rewards"][:, None]  # every real step of an episode with rewards
    err = out[REWARD][:, :, 0, 0] - (batch["rewards"][..., 0] - 2.0) / 0.5
    torch.testing.assert_close(parts[REWARD], err[use].square().mean())
    torch.testing.assert_close(total, sum(parts.values()))
    # predict() decodes it into reward units
    shown = torch.ones(model.layout.num_tokens, dtype=torch.bool)
    raw = model.eval().predict(batch, shown, valid)[REWARD]
    torch.testing.assert_close(raw, model(batch, shown, valid)[REWARD][..., 0, :] * 0.5 + 2.0)
    del batch["rewards"]
    with pytest.raises(ConfigError, match="needs the batch's per-step rewards"):
        mtm_loss(out, batch, model.tokenizers, visible, valid, reward_units=model.reward_units)


def test_a_model_with_a_reward_head_round_trips_its_head_and_units():
    model = MTM(ModelConfig(width=16, heads=2, value_expectile=0.7, reward_head=True), tokenizers(), L).eval()
    model.set_reward_stats(3.0, 0.25)
    again = MTM.from_spec(json.loads(json.dumps(model.spec()))).eval()
    assert again.has_reward and float(again.reward_units.mean) == 0.0  # units come with the weights
    again.load_state_dict(model.state_dict())
    assert float(again.reward_units.mean) == 3.0 and float(again.reward_units.std) == 0.25
    batch = {"states": torch.randn(3, L, S), "actions": torch.randn(3, L, A), "returns": torch.randn(3, L, 1)}
    visible = torch.ones(model.layout.num_tokens, dtype=torch.bool)
    torch.testing.assert_close(model.predict(batch, visible)[REWARD], again.predict(batch, visible)[REWARD])


def test_the_reward_head_needs_returns():
    toks = {k: v for k, v in tokenizers().items() if k != "returns"}
    with pytest.raises(ConfigError, match="reward_head needs return tokens"):
        MTM(ModelConfig(width=16, heads=2, reward_head=True), toks, L)


# --------------------------------------------------------------------------------------------------
# The planner, under a model whose predictions are known


class KnownModel:
    """value at step t = state[t, 0]; next state = (action[t, 0], 0, 0); proposals: zeros; with a
    reward head, reward at t = action[t, 1]. So a candidate's imagined next state, and with it its
    value at h = 1, is its first action's [0], and its first reward its first action's [1]."""

    window, has_value = L, True
    config = ModelConfig(width=16, heads=2)

    def __init__(self, has_reward=False):
        self.has_reward = has_reward
        self.tokenizers = tokenizers()
        self.layout = TokenLayout.from_tokenizers(self.tokenizers, L)

    def inference_work(self, windows):  # TokenModel's measure: a planner resolves its precision with it
        return windows * self.layout.num_tokens * self.config.width ** 2

    def predict(self, batch, visible, heads=None, **_):
        b = batch["states"].shape[0]
        nxt = torch.zeros(b, L, S)
        nxt[:, 1:, 0] = batch["actions"][:, :-1, 0]
        out = {"value": batch["states"][:, :, :1], "states": nxt, "actions": torch.zeros(b, L, A)}
        if self.has_reward:
            out[REWARD] = batch["actions"][:, :, 1:2]
        return {k: v for k, v in out.items() if k in heads}


def planner(has_reward=False, **settings):
    settings.setdefault("plan_max_gain", None)  # the known model's margins are far above the default cap
    settings.setdefault("plan_relative_temperature", None)  # and its scores' spread: plan_temperature alone
    config = PolicyConfig(mode="plan", **settings)
    low, high = torch.full((A,), -1.0), torch.full((A,), 1.0)
    return Planner(KnownModel(has_reward), config, low, high, num_envs=2)


def window(n):
    return {"states": torch.zeros(n, L, S), "actions": torch.zeros(n, L, A), "returns": torch.zeros(n, L, 1),
            "timesteps": torch.arange(L).repeat(n, 1)}


def test_the_planner_acts_on_the_best_imagined_candidate():
    plan = planner(plan_candidates=32, plan_horizon=2, plan_temperature=1e-6, plan_noise=0.5)
    c = torch.tensor([0, 1])  # one env at its first step, one with a full window (it slides)
    chosen = plan(window(2), c, torch.zeros(2, A))
    candidates, scores = plan.last_candidates, plan.last_scores
    assert candidates.shape == (2, 32, A) and scores.shape == (2, 32)
    torch.testing.assert_close(candidates[:, 0], torch.zeros(2, A))  # candidate 0 is the proposal itself
    assert (candidates.abs() <= 1).all() and candidates[:, 1:].std() > 0.2
    # score = mean(value now (0), value of the imagined next state (= the first action's [0])) / 1
    torch.testing.assert_close(scores, candidates[..., 0] / 2)
    best = candidates[torch.arange(2), scores.argmax(1)]
    torch.testing.assert_close(chosen, best)
    assert (chosen[:, 0] > 0.5).all()


@pytest.mark.parametrize("max_gain", [0.05, 0.2, 10.0])
def test_max_gain_cuts_the_step_from_the_rcbc_action_where_the_promised_gain_is_larger(max_gain):
    # The same known model: score = first action's [0] / 2, candidate 0 (the proposal, 0) scores 0,
    # so the margin is the best score; the step towards the chosen action is max_gain / margin of it.
    free = planner(plan_candidates=32, plan_horizon=2, plan_temperature=1e-6, plan_noise=0.5)
    capped = planner(plan_candidates=32, plan_horizon=2, plan_temperature=1e-6, plan_noise=0.5, plan_max_gain=max_gain)
    c, proposal = torch.tensor([0, 1]), torch.full((2, A), 0.1)
    full = free(window(2), c, proposal)
    chosen = capped(window(2), c, proposal)
    torch.testing.assert_close(capped.last_candidates, free.last_candidates)  # the same noise
    margin = capped.last_scores.amax(1) - capped.last_scores[:, 0]
    assert (margin > 0.2).all() and (margin < 10).all()
    step = (max_gain / margin).clamp(max=1.0)[:, None]
    torch.testing.assert_close(chosen, proposal + step * (full - proposal))
    assert capped.describe()["max_gain"] == max_gain and free.describe()["max_gain"] is None


def test_one_step_cannot_tell_candidates_apart_here_and_a_hot_softmax_averages():
    # Horizon 1 scores the current state's value only: all tie, so the softmax averages them.
    plan = planner(plan_candidates=16, plan_horizon=1, plan_temperature=0.05, plan_noise=0.5)
    chosen = plan(window(1), torch.tensor([1]), torch.zeros(1, A))
    torch.testing.assert_close(chosen, plan.last_candidates.mean(1))
    hot = planner(plan_candidates=16, plan_horizon=2, plan_temperature=1e6, plan_noise=0.5)
    chosen = hot(window(1), torch.tensor([0]), torch.zeros(1, A))
    torch.testing.assert_close(chosen, hot.last_candidates.mean(1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("discount", [0.99, 0.5, 0.01])
def test_scored_by_rewards_the_planner_adds_discounted_rewards_and_the_final_value(discount):
    plan = planner(has_reward=True, plan_candidates=64, plan_horizon=1, plan_temperature=1e-6, plan_noise=0.6,
                   plan_discount=discount)
    assert plan.score_by == "rewards" and "reward head over 1 steps" in plan.describe()["scored_by"]
    chosen = plan(window(2), torch.tensor([0, 1]), torch.zeros(2, A))
    first = plan.last_candidates
    # (1 - g) r(s, a) + g V(s'): the reward is the action's [1], the next state's value its [0]
    want = (1 - discount) * first[..., 1] + discount * first[..., 0]
    torch.testing.assert_close(plan.last_scores, want)
    torch.testing.assert_close(chosen, first[torch.arange(2), want.argmax(1)])
    # a far-sighted planner follows the value, a short-sighted one the reward
    follows = 0 if discount > 0.5 else 1 if discount < 0.5 else None
    if follows is not None:
        assert (chosen[:, follows] > 0.5).all()


def test_scoring_by_rewards_needs_a_reward_head_and_auto_picks_it():
    with pytest.raises(ConfigError, match="plan_score 'rewards' needs a model with a reward head"):
        planner(plan_score="rewards")
    assert planner(has_reward=True).score_by == "rewards" and planner().score_by == "value"
    assert planner(has_reward=True, plan_score="value").score_by == "value"


def test_the_relative_temperature_floors_the_softmax_at_the_spread_of_the_candidates_scores():
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0], [5.0, 5.0, 5.0, 5.0]])
    floored = planner(plan_temperature=1e-3, plan_relative_temperature=2.0)
    absolute = 1e-3 * floored.return_scale
    # Row 0's scores spread far beyond the temperature: the floor, 2 stds of them; row 1's do not.
    torch.testing.assert_close(floored.softmax_unit(scores), torch.tensor([2.0 * scores[0].std().item(), absolute]))
    torch.testing.assert_close(planner(plan_temperature=1e-3).softmax_unit(scores), torch.full((2,), absolute))
    # With the floor, the best of scores one std apart is not followed alone.
    weights = torch.softmax((scores[0] - 3.0) / floored.softmax_unit(scores)[0], 0)
    assert 0.3 < weights[3].item() < 0.6


def test_no_noise_is_the_rcbc_action():
    plan = planner(plan_candidates=8, plan_horizon=2, plan_noise=0.0)
    proposal = torch.tensor([[0.3, -0.2]])
    torch.testing.assert_close(plan(window(1), torch.tensor([1]), proposal), proposal)


def test_a_full_window_slides_left_without_wrapping_its_oldest_return_around():
    """Under --decrement each step's return token is another target: the imagined step after a full
    window keeps the current one (a roll would bring back the oldest)."""
    plan = planner()
    batch = window(2)
    batch["returns"][:, :, 0] = torch.tensor([[5.0, 4.0], [5.0, 4.0]])
    batch["states"][:, :, 0] = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    c = torch.tensor([1, 0])  # the first env's window is full, the second's is not
    plan._slide(batch, c)
    assert c.tolist() == [0, 0]
    assert batch["returns"][:, :, 0].tolist() == [[4.0, 4.0], [5.0, 4.0]]
    assert batch["states"][:, :, 0].tolist() == [[2.0, 2.0], [1.0, 2.0]]
    assert batch["timesteps"].tolist() == [[1, 2], [0, 1]]


def test_imagining_needs_two_steps_per_window_and_binned_actions_cannot_be_perturbed():
    one_step, one_step_rewards = KnownModel(), KnownModel(has_reward=True)
    one_step.window = one_step_rewards.window = 1
    low, high = torch.full((A,), -1.0), torch.full((A,), 1.0)
    message = "needs a model of 2 or more steps per window"
    for model, settings in ((one_step, {"plan_horizon": 2}), (one_step_rewards, {"plan_score": "rewards"})):
        with pytest.raises(ConfigError, match=message):
            Planner(model, PolicyConfig(mode="plan", **settings), low, high, num_envs=1)
    Planner(one_step, PolicyConfig(mode="plan", plan_score="value"), low, high, num_envs=1)  # H = 1: no imagining
    binned = KnownModel()
    binned.tokenizers = {**binned.tokenizers, "actions": BinnedTokenizer(A, np.zeros(A), np.ones(A), 8, name="actions")}
    with pytest.raises(ConfigError, match="a model of binned actions"):
        Planner(binned, PolicyConfig(mode="plan"), low, high, num_envs=1)


# --------------------------------------------------------------------------------------------------
# The mode: one table, the policy, the command line


def test_every_policy_mode_has_its_mask_in_the_one_table():
    assert set(POLICY_MASKS) == set(POLICY_MODES) and "plan" in POLICY_MODES


@pytest.mark.parametrize("setting, message", [
    ({"plan_candidates": 0}, "plan_candidates must be >= 1, got 0"),
    ({"plan_horizon": 0}, "plan_horizon must be >= 1, got 0"),
    ({"plan_temperature": 0.0}, "plan_temperature must be > 0, got 0.0"),
    ({"plan_noise": -1.0}, "plan_noise must be >= 0, got -1.0"),
    ({"plan_max_gain": 0.0}, "plan_max_gain must be > 0, got 0.0"),
    ({"plan_relative_temperature": 0.0}, "plan_relative_temperature must be > 0, got 0.0"),
    ({"plan_discount": 1.0}, r"plan_discount must be in \(0, 1\), got 1.0"),
    ({"plan_score": "max"}, "plan_score must be auto, q, value or rewards, got 'max'"),
])
def test_bad_plan_settings_are_refused(setting, message):
    with pytest.raises(ValueError, match=message):
        PolicyConfig(**setting)


@pytest.mark.parametrize("option, value, message", [
    ("--plan-candidates", "0", "error: --plan-candidates must be >= 1, got 0"),
    ("--plan-horizon", "0", "error: --plan-horizon must be >= 1, got 0"),
    ("--plan-temperature", "0", "error: --plan-temperature must be > 0, got 0.0"),
    ("--plan-discount", "0", "error: --plan-discount must be in (0, 1), got 0.0"),
    ("--plan-max-gain", "-1", "error: --plan-max-gain must be > 0, got -1.0"),
    ("--plan-relative-temperature", "0", "error: --plan-relative-temperature must be > 0, got 0.0"),
])
def test_bad_plan_options_give_one_error_line(reacher_run, option, value, message):
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(reacher_run), "--mode", "plan", option, value])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [message]


def test_plan_acts_from_a_checkpoint_without_a_value_head(reacher_run):
    ck = load_checkpoint(reacher_run)
    model = load_model(ck)
    policy = MTMPolicy(model, ck.metadata, mode="plan", num_envs=3, plan_candidates=5, plan_horizon=3)
    assert policy.conditions_on_return and policy.planner.describe()["scored_by"].startswith("return head")
    policy.reset()
    obs = np.random.default_rng(0).normal(size=(3, model.tokenizers["states"].dim)).astype(np.float32)
    for _ in range(L + 3):  # past the window: the imagined windows slide
        actions = policy.act(obs)
        assert actions.shape == (3, model.tokenizers["actions"].dim) and np.isfinite(actions).all()
    assert policy.planner.last_scores.shape == (3, 5)


def test_an_episodes_candidates_depend_on_its_index_not_on_the_number_of_envs(reacher_run):
    """Each env slot draws its candidates' noise from a stream restarted per episode (its index), so
    mode plan's episodes are the same run in 1, 2 or 3 envs (fp32 pinned: auto may choose another
    precision for another batch size)."""
    from mtm.evaluation import evaluate_checkpoint

    ck = load_checkpoint(reacher_run)
    setting = PolicyConfig(mode="plan", plan_candidates=8, plan_noise=0.5, plan_temperature=0.01, precision="fp32")
    returns = [[e["return"] for e in evaluate_checkpoint(ck, episodes=3, num_envs=k, policy=setting, seed=0,
                                                         device="cpu")["per_episode"]] for k in (1, 2, 3)]
    # the same up to the rounding of another batch size's matmuls
    np.testing.assert_allclose(returns[1], returns[0], rtol=1e-4)
    np.testing.assert_allclose(returns[2], returns[0], rtol=1e-4)
    other = evaluate_checkpoint(ck, episodes=3, num_envs=3, policy=PolicyConfig(**{**setting.__dict__, "plan_seed": 1}),
                                seed=0, device="cpu")
    moved = np.abs(np.array([e["return"] for e in other["per_episode"]]) - returns[0]) / np.abs(returns[0])
    assert moved.max() > 1e-2  # the noise matters, and plan_seed moves it


def test_plan_end_to_end_in_the_eval_command(reacher_run, tmp_path):
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(reacher_run), "--mode", "plan", "--episodes", "2",
                                       "--num-envs", "2", "--plan-candidates", "4", "--no-progress",
                                       "--plan-relative-temperature", "1.5", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "mode plan" in result.output and "4 candidates x 1 step, temperature 0.05 (at least 1.5 std" in result.output
    report = json.loads(out.read_text())
    assert report["mode"] == "plan" and report["episodes"] == 2 and report["target_return"] is not None
    plan = report["plan"]
    assert {k: plan[k] for k in ("candidates", "horizon", "temperature", "relative_temperature", "noise", "scored_by")} == {
        "candidates": 4, "horizon": 1, "temperature": 0.05, "relative_temperature": 1.5, "noise": 0.3,
        "scored_by": "return head (mean; no value head)"}
    assert plan["precision"]["requested"] == "auto" and "precision" in result.output


def test_the_planners_queries_decode_the_value_and_next_state_as_the_full_pass_does():
    torch.manual_seed(0)
    model = MTM(ModelConfig(width=16, heads=2, dropout=0.0, value_expectile=0.7), tokenizers(), L).eval()
    b, layout = 5, model.layout
    batch = {"states": torch.randn(b, L, S), "actions": torch.randn(b, L, A), "returns": torch.randn(b, L, 1)}
    visible = (layout.role("states") | layout.role("actions")) & (layout.timestep == 0)
    asked = (layout.role("returns") & (layout.timestep == 0)) | (layout.role("states") & (layout.timestep == 1))
    full = model.predict(batch, visible, heads=("value", "states"))
    part = model.predict(batch, visible, heads=("value", "states"), queries=asked)
    torch.testing.assert_close(part["value"][:, 0], full["value"][:, 0])
    torch.testing.assert_close(part["states"][:, 1], full["states"][:, 1])

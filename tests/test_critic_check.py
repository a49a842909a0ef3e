"""Whether a critic ranks the data's actions (mtm.evaluation.critic): the Monte-Carlo returns it is
scored against (falls end the sum, timeouts are bootstrapped), the statistics against critics whose
answers are known, and training's validation logging them."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mtm.checkpoint import load_checkpoint
from mtm.data.episode import DatasetInfo
from mtm.data.trajectories import Trajectories
from mtm.evaluation.critic import MIN_STEPS, critic_check, discounted_returns, n_step_returns
from mtm.evaluation.predictions import run_training_data
from mtm.policy import load_model
from mtm.training.loop import train

torch.set_num_threads(1)
DISCOUNT = 0.9


def test_discounted_returns_are_the_closed_form_with_the_tail_after_the_last_step():
    r = np.array([1.0, 2.0, 3.0])
    g = discounted_returns(r, 0.5, tail=8.0)
    np.testing.assert_allclose(g, [1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 8, 2 + 0.5 * 3 + 0.25 * 8, 3 + 0.5 * 8])
    np.testing.assert_allclose(discounted_returns(r, 0.5), [2.75, 3.5, 3.0])


def test_n_step_returns_are_n_rewards_then_the_value_and_the_whole_return_near_the_end():
    r = np.array([1.0, 2.0, 3.0, 4.0])
    v = np.array([10.0, 20.0, 30.0, 40.0])
    g = n_step_returns(r, v, 0.5, 2, tail=8.0)
    np.testing.assert_allclose(g[:2], [1 + 0.5 * 2 + 0.25 * 30, 2 + 0.5 * 3 + 0.25 * 40])
    np.testing.assert_allclose(g[2:], discounted_returns(r, 0.5, tail=8.0)[2:])  # t + 2 is past the end


def episodes(n: int = 40, length: int = 10, fell_every: int = 2, seed: int = 0) -> Trajectories:
    """n episodes of 1-D states and actions; the reward of a step is its state plus its action, so the
    return depends on both. Every `fell_every`-th episode ends by a fall (terminal), the rest time out."""
    rng = np.random.default_rng(seed)
    rows = n * length
    states = rng.normal(size=(rows, 1)).astype(np.float32)
    actions = rng.normal(size=(rows, 1)).astype(np.float32)
    terminals = np.zeros((rows, 1), np.float32)
    terminals[length - 1::length * fell_every] = 1.0
    starts = np.arange(n) * length
    arrays = {"states": states, "actions": actions, "rewards": states + actions, "terminals": terminals,
              "returns": np.zeros((rows, 1), np.float32), "timesteps": np.tile(np.arange(length), n)}
    return Trajectories(arrays, starts, np.full(n, length), DatasetInfo("test", "memory"), ["state"],
                        {"kind": "sum", "gamma": 0.99, "horizon": 1000})


def true_values(data: Trajectories):
    """The Monte-Carlo return of every step, as critic_check computes it with a V of 0."""
    return np.concatenate([discounted_returns(data.arrays["rewards"][s:s + n, 0], DISCOUNT)
                           for s, n in zip(data.starts, data.lengths)])


class KnownCritic(torch.nn.Module):
    """A model whose critic answers from tables: V(s) and Q(s, a) looked up by row."""

    has_critic = True

    def __init__(self, v, q):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.critic = SimpleNamespace(discount=DISCOUNT)
        self.reward_scale = torch.tensor(1.0)
        self.v, self.q = v, q

    def state_value(self, s):
        return self.v(s)

    def q_value(self, s, a):
        return self.q(s, a)


def lookup(data: Trajectories, values: np.ndarray):
    """A function of the state that returns values[row] for the row whose state it is."""
    table = {float(x): float(v) for x, v in zip(data.arrays["states"][:, 0], values)}
    return lambda s: torch.tensor([table[float(x)] for x in s[:, 0]], dtype=torch.float64)


def test_a_q_that_knows_the_return_explains_all_the_state_leaves_and_one_that_ignores_the_action_none():
    data = episodes()
    g = true_values(data)
    # V = 0 everywhere: with no bootstrap tail the returns are exactly the discounted sums.
    zero = lambda s: torch.zeros(s.shape[0], dtype=torch.float64)  # noqa: E731
    knows = critic_check(KnownCritic(zero, lambda s, a: lookup(data, g)(s)), data)
    assert knows["steps"] == 400 and knows["episodes"] == 40
    assert knows["action_gain"] == pytest.approx(1.0) and knows["adv_corr"] == pytest.approx(1.0)
    assert knows["r2_v"] == pytest.approx(0.0)
    # Q = V: the action explains nothing beyond the state.
    blind = critic_check(KnownCritic(zero, lambda s, a: zero(s)), data)
    assert blind["action_gain"] == pytest.approx(0.0)
    # Q = V + noise unrelated to the return: worse than ignoring the action.
    noise = np.random.default_rng(1).normal(size=len(g)) * g.std()
    noisy = critic_check(KnownCritic(zero, lambda s, a: lookup(data, noise)(s)), data)
    assert noisy["action_gain"] < -0.5 and abs(noisy["adv_corr"]) < 0.2


def test_timeouts_are_bootstrapped_with_the_last_states_value_and_falls_are_not():
    data = episodes(n=20)
    v_last = 5.0
    # V = v_last on every state: each timed-out episode's returns gain DISCOUNT^(T-t) * v_last.
    const = lambda s: torch.full((s.shape[0],), v_last, dtype=torch.float64)  # noqa: E731
    g = []
    for i, (s, n) in enumerate(zip(data.starts, data.lengths)):
        fell = data.arrays["terminals"][s + n - 1, 0] > 0
        g.append(discounted_returns(data.arrays["rewards"][s:s + n, 0], DISCOUNT, 0.0 if fell else v_last))
    g = np.concatenate(g)
    check = critic_check(KnownCritic(const, lambda s, a: lookup(data, g)(s)), data)
    assert check["action_gain"] == pytest.approx(1.0)  # Q equals the bootstrapped return exactly


def test_no_verdict_without_a_critic_or_with_too_few_steps():
    data = episodes()
    zero = lambda s: torch.zeros(s.shape[0], dtype=torch.float64)  # noqa: E731
    model = KnownCritic(zero, lambda s, a: zero(s))
    assert critic_check(model, episodes(n=(MIN_STEPS - 1) // 10)) is None
    model.critic = None
    assert critic_check(model, data) is None


# --------------------------------------------------------------------------------------------------
# Training's validation reports it


def test_validation_logs_whether_the_critic_ranks_the_held_out_actions(tmp_path):
    from test_critic import mtm_config
    from test_iql import write_two_actions
    data = write_two_actions(tmp_path / "two.hdf5", n=1200)  # 120 held-out one-step episodes
    run = tmp_path / "run"
    train(mtm_config(data, run, "train.steps=150", "model.critic_updates=2", "model.iql_polyak=0.05",
                     "train.val_every=150"), progress=False, say=None)
    rows = [json.loads(line) for line in open(run / "metrics.jsonl") if "val/critic_action_gain" in line]
    assert len(rows) == 1 and rows[0]["step"] == 150
    # Good and bad actions from one state: the action explains the whole return, and Q learnt it.
    model = load_model(load_checkpoint(run))
    expected = critic_check(model, run_training_data(load_checkpoint(run))[1].val)
    assert rows[0]["val/critic_action_gain"] == pytest.approx(expected["action_gain"]) and expected["action_gain"] > 0.5
    assert rows[0]["val/critic_adv_corr"] > 0.8 and "val/critic_r2_v" in rows[0]


def write_two_step_choices(path, n: int = 600, seed: int = 0):
    """Two-step episodes: from the same first state half take GOOD (reward 1) and half BAD (reward 0),
    then one step of reward 0 that ends by a fall; the first action alone decides the return. (IQL
    validates on 2-step windows, which one-step episodes do not fill.)"""
    import h5py
    from test_iql import BAD, GOOD
    rng = np.random.default_rng(seed)
    good = np.arange(n) % 2 == 0
    first = np.where(good, GOOD, BAD) + rng.normal(0, 0.01, n)
    with h5py.File(path, "w") as f:
        f["observations"] = np.repeat(np.array([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]], np.float32)[None], n, 0).reshape(-1, 3)
        f["actions"] = np.stack([first, np.zeros(n)], 1).reshape(-1, 1).astype(np.float32)
        f["rewards"] = np.stack([good, np.zeros(n)], 1).reshape(-1).astype(np.float32)
        f["terminals"] = np.tile([False, True], n)
        f["timeouts"] = np.zeros(2 * n, bool)
    return path


def test_an_iql_baselines_validation_logs_the_same_check(tmp_path):
    from test_iql import iql_config
    data = write_two_step_choices(tmp_path / "two.hdf5")
    run = tmp_path / "iql"
    train(iql_config(data, run, "train.steps=200", "train.val_every=200"), progress=False, say=None)
    rows = [json.loads(line) for line in open(run / "metrics.jsonl") if "val/critic_action_gain" in line]
    assert len(rows) == 1 and rows[0]["step"] == 200
    expected = critic_check(load_model(load_checkpoint(run)), run_training_data(load_checkpoint(run))[1].val)
    assert rows[0]["val/critic_action_gain"] == pytest.approx(expected["action_gain"]) and expected["action_gain"] > 0.5

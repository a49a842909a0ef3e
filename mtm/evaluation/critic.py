"""Does a model's critic know what the data's actions are worth? Its Q and V against the Monte-Carlo
returns of held-out episodes.

The planner (mode plan, mtm.planning) moves the RCBC action wherever the critic's Q says another
action is worth more. That is safe only where Q has learnt how the return depends on the action,
which the data shows only where it holds different actions in similar states and those actions
lead to different returns. On each held-out step t of episodes with actions and rewards:

    G_t   the discounted Monte-Carlo return from t, in the critic's units (rewards times the reward
          scale, the critic's discount); an episode that timed out is bootstrapped with V of its last
          state, one that ended by a fall is not
    V_t   V(s_t), the expectile value: what the state alone says
    Q_t   Q(s_t, a_t), the target Qs' minimum at the data's own action: the state and the action

and over all of them (each residual centred: V is an upper expectile, not a mean):

    r2_v          1 - var(G - V) / var(G): the share of the return's variance the state explains
    action_gain   1 - var(G - Q) / var(G - V): the share of what the state leaves that the action
                  explains, by the critic; <= 0: Q ranks the data's actions no better than ignoring
                  them. A diagnostic, not a gate: it does not tell where planning pays (hopper-medium
                  -0.012, plan +8.5; halfcheetah-expert 0.006, plan -12 before the temperature floor;
                  BENCHMARKS.md, "The temperature's unit")
    adv_corr      corr(Q - V, G - V): the critic's advantages against the Monte-Carlo ones
    spread_g_v    std(G - V), the Monte-Carlo advantages' spread, and spread_q_v, std(Q - V), the
                  critic's, both in the critic's units

With `nstep` = n, G_t is an n-step return instead (n rewards, then V of the state reached): the
critic against its own bootstrap, less noisy than a whole episode's return where episodes are long.
Reads any model with a `critic` and mtm.model.critic.CriticValues' q_value / state_value: an MTM
trained with model.critic, or mlp-iql (scripts/critic_check.py prints it for either).
"""

from __future__ import annotations

import numpy as np
import torch

from mtm.data.trajectories import Trajectories

MIN_STEPS = 100  # fewer held-out steps than this (with actions and rewards) give no verdict
RESAMPLES = 200  # sets of episodes drawn with replacement for the standard errors


def discounted_returns(rewards: np.ndarray, discount: float, tail: float = 0.0) -> np.ndarray:
    """G_t = r_t + discount G_{t+1} for t = T-1 .. 0, with G_T = tail (the value after the last step)."""
    out = np.empty(len(rewards), np.float64)
    acc = float(tail)
    for t in range(len(rewards) - 1, -1, -1):
        acc = float(rewards[t]) + discount * acc
        out[t] = acc
    return out


def n_step_returns(rewards: np.ndarray, values: np.ndarray, discount: float, n: int, tail: float = 0.0) -> np.ndarray:
    """G_t = r_t + ... + discount^(n-1) r_(t+n-1) + discount^n values[t+n]; where t + n passes the
    episode's end, its whole return with `tail` after the last step (as discounted_returns)."""
    full = discounted_returns(rewards, discount, tail)
    ahead = np.arange(len(rewards)) + n
    inside = ahead < len(rewards)
    later = np.minimum(ahead, len(rewards) - 1)
    # The n-step sum is the whole return less the discounted return from t + n on.
    return full - np.where(inside, discount ** n * (full[later] - values[later]), 0.0)


def return_stds_per_critic_unit(model: torch.nn.Module) -> float:
    """The factor that brings the critic's units (discounted, scaled rewards) to return-token stds,
    the planner's units (mtm.planning.imagine_q: a reward rate by (1 - discount) / reward_scale, then
    over the return token's scale); NaN for a model without return tokens (mlp-iql)."""
    if "returns" not in model.tokenizers:
        return float("nan")
    return_scale = float(model.tokenizers["returns"].scale.reshape(-1)[0])
    return (1 - model.critic.discount) / float(model.reward_scale) / return_scale


def critic_check(model: torch.nn.Module, episodes: Trajectories, resamples: int = RESAMPLES,
                 nstep: int = 0) -> dict | None:
    """r2_v, action_gain, adv_corr and the spreads (above) of `model`'s critic on `episodes` (raw
    units, e.g. a run's held-out split), the first three with a standard error (`*_se`: the std over
    `resamples` sets of episodes drawn with replacement, as steps of one episode are not
    independent), and the number of steps and episodes they cover; returns are Monte-Carlo, or
    n-step with `nstep` > 0. None where the model has no critic or fewer than MIN_STEPS steps have
    actions and rewards."""
    if getattr(model, "critic", None) is None or not hasattr(model, "q_value"):
        return None
    usable = episodes.has("actions") & episodes.has("rewards")
    if int(episodes.lengths[usable].sum()) < MIN_STEPS:
        return None
    device = next(model.parameters()).device
    discount, scale = float(model.critic.discount), float(model.reward_scale)
    sums = []  # per episode: the sums the statistics are made of (moments of G, G - V, G - Q, Q - V)
    for start, length in zip(episodes.starts[usable], episodes.lengths[usable]):
        rows = slice(int(start), int(start + length))
        s = torch.as_tensor(episodes.arrays["states"][rows], device=device)
        a = torch.as_tensor(episodes.arrays["actions"][rows], device=device)
        v = model.state_value(s).double().cpu().numpy()
        q = model.q_value(s, a).double().cpu().numpy()
        fell = bool(episodes.arrays["terminals"][rows][-1, 0] > 0)
        rewards = episodes.arrays["rewards"][rows, 0].astype(np.float64) * scale
        tail = 0.0 if fell else v[-1]
        g = n_step_returns(rewards, v, discount, nstep, tail) if nstep else discounted_returns(rewards, discount, tail)
        by_state, by_action, advantage = g - v, g - q, q - v
        sums.append([len(g), g.sum(), (g * g).sum(), by_state.sum(), (by_state ** 2).sum(), by_action.sum(),
                     (by_action ** 2).sum(), advantage.sum(), (advantage ** 2).sum(), (advantage * by_state).sum()])
    sums = np.asarray(sums)  # (E, 10)
    counts = np.random.default_rng(0).multinomial(len(sums), np.full(len(sums), 1.0 / len(sums)), size=resamples)
    point = _statistics(sums.sum(0, keepdims=True))
    spread = _statistics(counts @ sums)
    out = {"steps": int(sums[:, 0].sum()), "episodes": int(len(sums))}
    for key in ("r2_v", "action_gain", "adv_corr"):
        out[key] = float(point[key][0])
        out[f"{key}_se"] = float(np.nanstd(spread[key]))
    out["spread_g_v"], out["spread_q_v"] = float(point["spread_g_v"][0]), float(point["spread_q_v"][0])
    return out


def _statistics(sums: np.ndarray) -> dict[str, np.ndarray]:
    """r2_v, action_gain, adv_corr and the spreads from rows of critic_check's summed moments (one
    row per set)."""
    n = sums[:, 0]
    mean = sums[:, 1:9:2] / n[:, None]  # G, G - V, G - Q, Q - V
    second = sums[:, 2:9:2] / n[:, None]
    var = np.maximum(second - mean ** 2, 0.0)
    var_g, var_state, var_action, var_adv = var.T
    cov = sums[:, 9] / n - mean[:, 3] * mean[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"r2_v": np.where(var_g > 0, 1.0 - var_state / var_g, 0.0),
                "action_gain": np.where(var_state > 0, 1.0 - var_action / var_state, 0.0),
                "adv_corr": np.where(var_adv * var_state > 0, cov / np.sqrt(var_adv * var_state), 0.0),
                "spread_g_v": np.sqrt(var_state), "spread_q_v": np.sqrt(var_adv)}

"""Does a checkpoint's critic know what the data's actions are worth? Held-out Monte-Carlo returns
against its Q and V.

The planner (mode plan, mtm.planning) moves the RCBC action wherever the critic's Q says another
action is worth more. That is only safe where Q has learnt how the return depends on the action,
which the data can show only where it holds different actions in similar states. This script
scores that on the run's held-out episodes (the split every run uses), for a model with a critic
(`small` + model.critic, or mlp-iql):

    G_t   the discounted Monte-Carlo return of the data from step t, in the critic's units (rewards
          times the reward scale, the critic's discount); an episode that timed out is bootstrapped
          with V of its last state, one that fell is not
    V     V(s_t), the expectile value: what the state is worth
    Q     Q(s_t, a_t), min of the target Qs at the data's own action

and prints, over all held-out steps (each residual centred, as V is an upper expectile, not a mean):

    r2_v           1 - var(G - V) / var(G): how much of the return the state explains
    action_gain    1 - var(G - Q) / var(G - V): how much of what is left the action explains
                   (<= 0: Q ranks the data's actions no better than ignoring them)
    adv_corr       corr(Q - V, G - V): the critic's advantage against the Monte-Carlo one
    adv_spread     std(G - V) and std(Q - V), in return-token stds (the planner's units)
    steepness      the median over states of the std of Q across `--candidates` noisy copies of the
                   data's action (noise `--noise` data action stds, as the planner's), in return-
                   token stds: what the planner sees

action_gain and adv_corr come with a standard error (`_se`: their std over held-out sets of the
same number of episodes drawn with replacement). Training's validation logs the same statistics for
an MTM with a critic (mtm.evaluation.critic, `val/critic_*`); this script adds mlp-iql checkpoints,
the steepness and, with --nstep N, n-step returns (N rewards, then V) in place of Monte-Carlo ones.

Usage:
  python scripts/critic_check.py runs/bench/beyond/hopper-expert-v5/seed1/mtm [more run dirs ...]
"""

from __future__ import annotations

# First: bench_common makes OpenMP wait passively, which must happen before torch loads.
from bench_common import parser_for

import json

import numpy as np
import torch

from mtm.checkpoint import load_checkpoint
from mtm.evaluation.critic import discounted_returns
from mtm.evaluation.predictions import run_training_data
from mtm.policy import load_model


def critic_parts(model):
    """(V(raw s), Q(raw s, raw a), discount, reward scale) of an MTM with a critic or an mlp-iql model."""
    critic = model.critic
    if hasattr(model, "_critic_states"):  # the MTM's critic
        states, actions = model._critic_states, model._critic_actions
    else:  # mlp-iql
        states, actions = model._states, model._unit_actions
    with torch.no_grad():
        def v(s):
            return critic.v(states(s))[..., 0]

        def q(s, a):
            return critic.target_q(states(s), actions(a))
    return v, q, critic.discount, float(model.reward_scale)


def check(run: str, candidates: int, noise: float, seed: int, nstep: int = 0, resamples: int = 200) -> dict:
    checkpoint = load_checkpoint(run)
    model = load_model(checkpoint)
    if getattr(model, "critic", None) is None:
        raise SystemExit(f"error: {run}: the model has no critic (train with --set model.critic=true, or mlp-iql)")
    _, data = run_training_data(checkpoint)
    val = data.val
    v_fn, q_fn, discount, scale = critic_parts(model)
    g, v, q, steep = [], [], [], []
    action_std = torch.as_tensor(checkpoint.run_metadata.stats["actions"].std, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for start, length in zip(val.starts, val.lengths):
            rows = slice(int(start), int(start + length))
            s = torch.as_tensor(val.arrays["states"][rows])
            a = torch.as_tensor(val.arrays["actions"][rows])
            r = val.arrays["rewards"][rows, 0].astype(np.float64) * scale
            fell = bool(val.arrays["terminals"][rows][-1, 0] > 0)
            vs = v_fn(s).double().numpy()
            if nstep:  # n-step returns: n real rewards, then the critic's V of the state reached
                full = discounted_returns(r, discount, 0.0 if fell else float(vs[-1]))
                ahead = np.arange(len(r)) + nstep
                later = np.where(ahead < len(r), full[np.minimum(ahead, len(r) - 1)], 0.0)
                boot = np.where(ahead < len(r), vs[np.minimum(ahead, len(r) - 1)], 0.0)
                g.append(full - discount ** nstep * later + discount ** nstep * boot)
            else:
                g.append(discounted_returns(r, discount, 0.0 if fell else float(vs[-1])))
            v.append(vs)
            q.append(q_fn(s, a).double().numpy())
            # Q across the planner's kind of candidates at a sample of this episode's states.
            idx = torch.arange(0, int(length), 10)
            eps = torch.randn(len(idx), candidates, a.shape[1], generator=gen) * noise * action_std
            cand = a[idx, None, :] + eps
            if hasattr(model, "action_high"):
                cand = torch.maximum(torch.minimum(cand, model.action_high), model.action_low)
            qs = q_fn(s[idx, None, :].expand(-1, candidates, -1), cand)
            steep.append(qs.std(-1).double().numpy())
    episode_of = np.concatenate([np.full(len(x), i) for i, x in enumerate(g)])
    g, v, q, steep = (np.concatenate(x) for x in (g, v, q, steep))
    # The return token's std in the critic's units: the planner's units (mtm.planning.imagine_q
    # brings Q to a reward rate by (1 - discount) / reward_scale, then divides by the return scale).
    return_scale = float(model.tokenizers["returns"].scale.reshape(-1)[0]) if "returns" in model.tokenizers else None
    to_std = (1 - discount) / scale / return_scale if return_scale else float("nan")

    def var(x):
        return float(np.var(x))

    res_v, res_q = g - v, g - q

    def gain_corr(rows):
        rv, rq = res_v[rows], res_q[rows]
        return 1 - var(rq) / var(rv), float(np.corrcoef(q[rows] - v[rows], rv)[0, 1])

    # Episodes resampled with replacement: the spread of the statistics over held-out sets this size.
    rng = np.random.default_rng(seed)
    by_episode = [np.flatnonzero(episode_of == i) for i in range(int(episode_of.max()) + 1)]
    boot = np.array([gain_corr(np.concatenate([by_episode[i] for i in rng.integers(0, len(by_episode), len(by_episode))]))
                     for _ in range(resamples)])
    return {
        "action_gain_se": float(boot[:, 0].std()), "adv_corr_se": float(boot[:, 1].std()),
        "run": run, "step": checkpoint.step, "held_out_steps": int(len(g)), "episodes": int(val.num_episodes),
        "r2_v": 1 - var(res_v) / var(g),
        "action_gain": 1 - var(res_q) / var(res_v),
        "adv_corr": float(np.corrcoef(q - v, res_v)[0, 1]),
        "adv_spread_mc": float(np.std(res_v)) * to_std,
        "adv_spread_q": float(np.std(q - v)) * to_std,
        "steepness": float(np.median(steep)) * to_std,
    }


def main() -> None:
    parser = parser_for(__doc__)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--candidates", type=int, default=64)
    parser.add_argument("--noise", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nstep", type=int, default=0, help="n-step returns (n rewards, then V) instead of Monte-Carlo")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [check(run, args.candidates, args.noise, args.seed, args.nstep) for run in args.runs]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    keys = ["r2_v", "action_gain", "action_gain_se", "adv_corr", "adv_corr_se", "adv_spread_mc", "adv_spread_q", "steepness"]
    print("run | step | " + " | ".join(keys))
    for row in rows:
        print(f"{row['run']} | {row['step']} | " + " | ".join(f"{row[k]:.3f}" for k in keys))


if __name__ == "__main__":
    main()

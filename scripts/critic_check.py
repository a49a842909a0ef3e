"""Does a checkpoint's critic know what the data's actions are worth? Held-out Monte-Carlo returns
against its Q and V.

The planner (mode plan, mtm.planning) moves the RCBC action wherever the critic's Q says another
action is worth more. That is only safe where Q has learnt how the return depends on the action,
which the data can show only where it holds different actions in similar states. This script prints
mtm.evaluation.critic's statistics (training's validation logs the same ones as `val/critic_*`) on
the run's held-out episodes (the split every run uses), for a model with a critic (`small` +
model.critic, or mlp-iql):

    r2_v           1 - var(G - V) / var(G): how much of the return the state explains
    action_gain    1 - var(G - Q) / var(G - V): how much of what is left the action explains
                   (<= 0: Q ranks the data's actions no better than ignoring them), with its
                   standard error over held-out sets of episodes (`_se`)
    adv_corr       corr(Q - V, G - V): the critic's advantage against the Monte-Carlo one
    adv_spread     std(G - V) and std(Q - V), in return-token stds (the planner's units)

and one figure of its own:

    steepness      the median over states of the std of Q across `--candidates` noisy copies of the
                   data's action (noise `--noise` data action stds, as the planner's), in return-
                   token stds: what the planner sees

With --nstep N the returns are n-step (N rewards, then V) in place of Monte-Carlo ones.

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
from mtm.evaluation.critic import critic_check, return_stds_per_critic_unit
from mtm.evaluation.predictions import run_training_data
from mtm.policy import load_model


def steepness(model, val, action_std: torch.Tensor, candidates: int, noise: float, seed: int) -> float:
    """The median over every 10th held-out state of the std of Q across `candidates` copies of the
    data's action with Gaussian noise of `noise` action stds (clipped to the action bounds), in the
    critic's units."""
    gen = torch.Generator().manual_seed(seed)
    stds = []
    for start, length in zip(val.starts, val.lengths):
        rows = np.arange(int(start), int(start + length), 10)
        s = torch.as_tensor(val.arrays["states"][rows])
        a = torch.as_tensor(val.arrays["actions"][rows])
        cand = a[:, None, :] + torch.randn(len(rows), candidates, a.shape[1], generator=gen) * noise * action_std
        cand = torch.maximum(torch.minimum(cand, model.action_high), model.action_low)
        stds.append(model.q_value(s[:, None, :].expand(-1, candidates, -1), cand).std(-1).double().numpy())
    return float(np.median(np.concatenate(stds)))


def check(run: str, candidates: int, noise: float, seed: int, nstep: int = 0) -> dict:
    checkpoint = load_checkpoint(run)
    model = load_model(checkpoint)
    _, data = run_training_data(checkpoint)
    stats = critic_check(model, data.val, nstep=nstep)
    if stats is None:
        raise SystemExit(f"error: {run}: the model has no critic (train with --set model.critic=true, or mlp-iql), "
                         "or its held-out split is too small to score it")
    action_std = torch.as_tensor(checkpoint.run_metadata.stats["actions"].std, dtype=torch.float32)
    to_std = return_stds_per_critic_unit(model)
    return {
        **stats, "run": run, "step": checkpoint.step,
        "adv_spread_mc": stats["spread_g_v"] * to_std, "adv_spread_q": stats["spread_q_v"] * to_std,
        "steepness": steepness(model, data.val, action_std, candidates, noise, seed) * to_std,
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

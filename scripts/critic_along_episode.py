"""Does the critic see a fall coming, and can the planner's candidates avoid it? One episode of a
policy, its critic's Q and V at every step beside the episode's own discounted return.

For a checkpoint with a critic (`small` + model.critic), runs one episode per reset seed in mode
--mode (rcbc or plan) and records at every step t:

    Q     the critic's Q(s_t, a_t) of the action the policy took
    V     the critic's V(s_t)
    G     the discounted return the episode then actually earned from t (the critic's discount and
          reward units; a fall ends it, a time-out is bootstrapped with V of the last state)
    best  in mode plan, how far the best of the planner's K candidates scored above candidate 0 (the
          RCBC action itself) at that step

and prints Q, V and G every --every steps and at the last ten, then, in return-token stds (the
planner's units): how far Q fell over the episode's last 100 steps and the median `best` margin of
those steps. Where Q falls by many stds while the candidates differ by hundredths, the critic sees
the fall coming and no action near the RCBC proposal avoids it (BENCHMARKS.md, "Beyond the data").

Usage:
  python scripts/critic_along_episode.py runs/bench/beyond/hopper-medium-replay-v5/seed0/mtm --mode plan
"""

from __future__ import annotations

# First: bench_common makes OpenMP wait passively, which must happen before torch loads.
from bench_common import parser_for

import numpy as np
import torch

from mtm.evaluation.critic import discounted_returns, return_stds_per_critic_unit
from mtm.policy import MTMPolicy

LAST = 100  # steps before the episode's end over which the summary measures Q's fall


def run_episode(policy: MTMPolicy, seed: int) -> dict[str, np.ndarray]:
    model = policy.model
    env = policy.make_env()
    obs, _ = env.reset(seed=seed)
    policy.reset(episode_indices=[seed])
    rows: dict[str, list] = {"q": [], "v": [], "reward": [], "best": []}
    done = terminated = False
    while not done:
        action = policy.act(obs[None])[0]
        s = torch.as_tensor(obs, dtype=torch.float32)[None]
        rows["q"].append(float(model.q_value(s, torch.as_tensor(action, dtype=torch.float32)[None])))
        rows["v"].append(float(model.state_value(s)))
        planner = policy.planner
        if planner is not None:
            scores = planner.last_scores[0]
            rows["best"].append(float(scores.max() - scores[0]) / planner.return_scale)
        obs, reward, terminated, truncated, _ = env.step(action)
        policy.observe([reward])
        rows["reward"].append(float(reward))
        done = terminated or truncated
    env.close()
    out = {k: np.asarray(v) for k, v in rows.items()}
    tail = 0.0 if terminated else float(model.state_value(torch.as_tensor(obs, dtype=torch.float32)[None]))
    out["g"] = discounted_returns(out["reward"] * float(model.reward_scale), float(model.critic.discount), tail)
    return out


def main() -> None:
    parser = parser_for(__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("--mode", default="plan", choices=("rcbc", "plan"))
    parser.add_argument("--seeds", default="100", help="reset seeds, comma-separated (mtm eval's first is 100)")
    parser.add_argument("--every", type=int, default=25)
    args = parser.parse_args()
    torch.set_num_threads(1)
    policy = MTMPolicy.from_checkpoint(args.checkpoint, mode=args.mode)
    model = policy.model
    if not getattr(model, "has_critic", False):
        raise SystemExit(f"error: {args.checkpoint}: the model has no critic (train with --set model.critic=true)")
    to_std = return_stds_per_critic_unit(model)
    for seed in (int(s) for s in args.seeds.split(",")):
        ep = run_episode(policy, seed)
        n = len(ep["q"])
        print(f"\nreset seed {seed}, mode {args.mode}: {n} steps, return {ep['reward'].sum():.1f}")
        print("   t |       Q |       V |       G")
        for t in sorted(set(range(0, n, args.every)) | set(range(max(0, n - 10), n))):
            print(f"{t:4d} | {ep['q'][t]:7.2f} | {ep['v'][t]:7.2f} | {ep['g'][t]:7.2f}")
        start = max(0, n - LAST)
        peak = ep["q"][start:].max()
        print(f"over the last {n - start} steps: Q falls {(peak - ep['q'][-1]) * to_std:.2f} return stds "
              f"(mean |Q - G| {np.abs(ep['q'] - ep['g'])[start:].mean() * to_std:.2f})", end="")
        if len(ep["best"]):
            print(f"; the best candidate scores {np.median(ep['best'][start:]):.3f} above the RCBC action (median)")
        else:
            print()


if __name__ == "__main__":
    main()

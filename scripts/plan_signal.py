"""How much the planner's scores vary across its candidates, against how much they vary across states.

Runs a checkpoint in mode plan for a few episodes and, at every env step, records what the planner
reads for each candidate: the value of (s_t, a) with the candidate's first action a, the reward of
(s_t, a) (models with a reward head) and the value of the imagined next state (with its RCBC action).
For each quantity it prints the median over steps of its std across the K candidates, the std across
steps of its candidate mean (the states' spread), and their ratio: a quantity whose spread across
candidates is a tiny part of the states' spread cannot rank nearby actions (BENCHMARKS.md, "Beyond the
data"). Also the median rank correlation (over steps) between each quantity and the one-step value.

--truth: also one episode in a single env where, at every step, each candidate's first action is
tried from a copy of the simulator's state, so the true reward of (s_t, a) sits beside the model's
predictions: the rank correlation across candidates says whether the model orders actions rightly.

Usage:
  python scripts/plan_signal.py runs/hopper --episodes 2
"""

from __future__ import annotations

# First: bench_common makes OpenMP wait passively, which must happen before torch loads.
from bench_common import parser_for

import statistics

import torch

from mtm.checkpoint import load_checkpoint
from mtm.evaluation import evaluate_checkpoint
from mtm.planning import Planner
from mtm.policy_config import PolicyConfig


def _ranks(x: torch.Tensor) -> torch.Tensor:
    return x.argsort(-1).argsort(-1).float()


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, K) x (n, K) -> (n,) rank correlation across the K candidates of each row."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(-1, keepdim=True), rb - rb.mean(-1, keepdim=True)
    return (ra * rb).sum(-1) / (ra.square().sum(-1) * rb.square().sum(-1)).sqrt().clamp_min(1e-12)


def main() -> None:
    parser = parser_for(__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=64)
    parser.add_argument("--noise", type=float, default=0.3)
    parser.add_argument("--precision", default="auto", help="auto, or fp32: bf16 rounds values to ~3 digits")
    parser.add_argument("--truth", action="store_true", help="also: true rewards of the candidates, one episode")
    args = parser.parse_args()
    torch.set_num_threads(1)
    records: dict[str, list[torch.Tensor]] = {"value(s,a)": [], "reward(s,a)": [], "value(s',a')": []}
    imagine = Planner.imagine

    def recording(self, batch, c, first, steps):
        values, rewards = imagine(self, batch, c, first, max(steps, 2))
        k = self.candidates
        records["value(s,a)"].append(values[:, 0].view(-1, k))
        records["value(s',a')"].append(values[:, 1].view(-1, k))
        if rewards is not None:
            records["reward(s,a)"].append(rewards[:, 0].view(-1, k))
        return values[:, :steps], None if rewards is None else rewards[:, :steps]

    Planner.imagine = recording
    checkpoint = load_checkpoint(args.checkpoint)
    setting = PolicyConfig(mode="plan", plan_candidates=args.candidates, plan_noise=args.noise, precision=args.precision)
    report = evaluate_checkpoint(checkpoint, episodes=args.episodes, num_envs=args.episodes, policy=setting, seed=0)
    print(f"{args.checkpoint}: plan score {report['normalized_score_mean']:.1f}, {report['plan']}")
    base = torch.cat(records["value(s,a)"])
    print("quantity | median std across candidates | std across states | ratio | median rank corr. with value(s,a)")
    for name, parts in records.items():
        if not parts:
            continue
        x = torch.cat(parts)  # (steps x envs, K)
        within = x.std(-1).median().item()
        across = x.mean(-1).std().item()
        corr = statistics.median(spearman(x, base).tolist())
        print(f"{name} | {within:.5f} | {across:.5f} | {within / across:.4f} | {corr:.2f}")
    if args.truth:
        for parts in records.values():
            parts.clear()
        truth = true_rewards(checkpoint, setting)
        print("true reward of (s, a) across candidates: median std", f"{truth.std(-1).median().item():.5f};",
              "median rank corr. with", ", ".join(
                  f"{name} {statistics.median(spearman(torch.cat(parts), truth).tolist()):.2f}"
                  for name, parts in records.items() if parts))


def true_rewards(checkpoint, setting: PolicyConfig) -> torch.Tensor:
    """(steps, K): the true reward of each candidate's first action at every step of one episode."""
    import gymnasium as gym
    import numpy as np

    from envs import register_envs
    from mtm.policy import MTMPolicy, load_model

    register_envs()
    model = load_model(checkpoint)
    policy = MTMPolicy(model, checkpoint.run_metadata, setting, num_envs=1)
    env = gym.make(checkpoint.run_metadata.env_id)
    sim = env.unwrapped
    obs, _ = env.reset(seed=0)
    policy.reset()
    rows, done = [], False
    while not done:
        action = policy.act(obs[None].astype(np.float32))[0]
        qpos, qvel = sim.data.qpos.copy(), sim.data.qvel.copy()
        rewards = []
        for a in policy.planner.last_candidates[0].numpy():
            sim.set_state(qpos, qvel)
            rewards.append(sim.step(a)[1])
        sim.set_state(qpos, qvel)
        rows.append(torch.tensor(rewards, dtype=torch.float32))
        obs, reward, terminated, truncated, _ = env.step(action)
        policy.observe([reward])
        done = terminated or truncated
    return torch.stack(rows)


if __name__ == "__main__":
    main()

"""How strongly a pixel policy acts, phase by phase, against the scripted expert on the same states.

Along closed-loop episodes of a checkpoint's own task (mtm/ReacherPixels-v0, mtm/PusherPixels-v0),
at every step both the policy and the task's scripted expert (privileged: it reads the target from
the simulator) are asked for an action on the state the policy reached; the policy's action is
executed. Per phase of the episode it prints the least-squares slope of the policy's action on the
expert's (1: as strong; below 1: the policy under-reacts, as a regression does when its input
hides part of what the action depends on), the mean |action| of both, and their squared difference.

    python scripts/pixel_action_gain.py runs/pix/base-s0 runs/cnn-bc/seed0 --episodes 20 --seed 5000

A low closed-loop score with a low offline error reads differently here: on ReacherPixels MTM's
first, large actions were the more accurate and its small corrections near the target the weaker
(BENCHMARKS.md, Pixel tasks, "A 1000-step screen").
"""

import argparse

import numpy as np


def phases_of(length: int) -> list[tuple[int, int]]:
    """Steps [0, 5), [5, 15), [15, end): the first large actions, the approach, the hold (50-step
    ReacherPixels); for longer episodes the same split scaled to their length."""
    scale = max(1, length // 50)
    return [(0, 5 * scale), (5 * scale, 15 * scale), (15 * scale, length)]


def gain_table(policy_actions: np.ndarray, expert_actions: np.ndarray, steps: np.ndarray,
               phases: list[tuple[int, int]]) -> list[dict]:
    """Per phase: slope of policy on expert actions (least squares through 0), mean |action| of each, MSE."""
    rows = []
    for lo, hi in phases:
        m = (steps >= lo) & (steps < hi)
        p, e = policy_actions[m], expert_actions[m]
        rows.append({"steps": f"{lo}-{hi - 1}", "slope": float((p * e).sum() / max((e * e).sum(), 1e-12)),
                     "policy_abs": float(np.abs(p).mean()), "expert_abs": float(np.abs(e).mean()),
                     "mse": float(((p - e) ** 2).mean())})
    return rows


def measure(path: str, episodes: int, seed: int, mode: str) -> list[dict]:
    import mtm
    from envs.tasks import TASKS
    from mtm.rollout import ExpertPolicy

    policy = mtm.load_policy(path, mode=mode, num_envs=1)
    env = policy.make_env()
    spec = TASKS.get(policy.env_id)
    if spec is None or spec.expert is None:
        raise SystemExit(f"error: {policy.env_id} has no scripted expert to compare with")
    expert = ExpertPolicy.for_task(spec, [env.unwrapped], env.action_space)
    acted, wanted, steps = [], [], []
    length = 0
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            policy.reset()
            expert.reset(np.array([0]), np.array([i]))
            t, done = 0, False
            while not done:
                batched = {key: value[None] for key, value in obs.items()} if isinstance(obs, dict) else obs[None]
                action = policy.act(batched)[0]
                acted.append(action)
                wanted.append(expert.act(batched)[0])
                steps.append(t)
                obs, _, terminated, truncated, _ = env.step(action)
                t, done = t + 1, terminated or truncated
            length = max(length, t)
    finally:
        env.close()
    return gain_table(np.asarray(acted), np.asarray(wanted), np.asarray(steps), phases_of(length))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="run or checkpoint directories")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=5000, help="episode i resets with seed + i, as mtm eval --seed")
    parser.add_argument("--mode", default="bc")
    args = parser.parse_args()
    import envs

    envs.register_envs()
    for path in args.checkpoints:
        for row in measure(path, args.episodes, args.seed, args.mode):
            print(f"{path} steps {row['steps']}: slope {row['slope']:.2f}, |policy| {row['policy_abs']:.3f}, "
                  f"|expert| {row['expert_abs']:.3f}, mse {row['mse']:.4f}")


if __name__ == "__main__":
    main()

"""Step a gymnasium env with a trained mtm policy: the loop to copy into your own code.

    python scripts/rollout.py runs/reacher --env Reacher-v5 --episodes 3
"""

import argparse

import gymnasium as gym

from mtm.policy import POLICY_MODES, MTMPolicy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a run directory or a checkpoint directory")
    parser.add_argument("--env", default="Reacher-v5")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--mode", default="rcbc", choices=POLICY_MODES)
    args = parser.parse_args()

    policy = MTMPolicy.from_checkpoint(args.checkpoint, mode=args.mode)  # num_envs=1, on the CPU
    env = gym.make(args.env)
    for episode in range(args.episodes):
        obs, _ = env.reset(seed=episode)
        policy.reset()  # a new episode: forget the history
        total, done = 0.0, False
        while not done:
            action = policy.act(obs[None])[0]  # the policy is batched: one row per env
            obs, reward, terminated, truncated, _ = env.step(action)
            policy.observe([reward])  # only needed for --decrement targets; harmless otherwise
            total += reward
            done = terminated or truncated
        print(f"episode {episode}: return {total:.2f}")
    env.close()


if __name__ == "__main__":
    main()

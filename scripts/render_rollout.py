"""Render one episode of a trained mtm policy to an mp4 file.

    MUJOCO_GL=egl python scripts/render_rollout.py runs/reacher reacher.mp4 --env Reacher-v5
"""

import argparse
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before mujoco loads

import gymnasium as gym  # noqa: E402
import imageio.v2 as imageio  # noqa: E402

from mtm.policy import MTMPolicy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a run directory or a checkpoint directory")
    parser.add_argument("output", help="the mp4 file to write")
    parser.add_argument("--env", default="Reacher-v5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="frame width and height in pixels")
    args = parser.parse_args()

    policy = MTMPolicy.from_checkpoint(args.checkpoint)
    env = gym.make(args.env, render_mode="rgb_array", width=args.size, height=args.size)
    obs, _ = env.reset(seed=args.seed)
    policy.reset()
    frames, total, done = [env.render()], 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy.act(obs[None])[0])
        policy.observe([reward])
        frames.append(env.render())
        total += reward
        done = terminated or truncated
    imageio.mimsave(args.output, frames, fps=env.metadata.get("render_fps", 30), macro_block_size=1)
    print(f"return {total:.2f}, {len(frames)} frames -> {args.output}")


if __name__ == "__main__":
    main()

"""Teacher-forced action error of a trained policy by phase of the episode.

Drives `MTMPolicy.act` through the recorded states of the last N episodes of the run's own dataset,
read as the run read it (mtm.evaluation.predictions.run_training_data: its format and files), so
the policy's action history holds its own actions, as in the env, but the states do not drift,
and prints the mean squared error against the recorded actions at steps 0-2, 3-59 and 60-199.
Tells "less accurate" apart from "errors compound in the closed loop" (BENCHMARKS.md, recipe study).

Usage:
  python scripts/policy_errors_by_phase.py RUN [RUN ...] [--episodes 10]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from mtm.checkpoint import load_checkpoint
from mtm.evaluation.predictions import run_training_data
from mtm.policy import MTMPolicy, load_model

PHASES = ((0, 3), (3, 60), (60, 200))


def phase_errors(path: str, episodes: int, action_history: bool) -> list[float]:
    checkpoint = load_checkpoint(path)
    model = load_model(checkpoint, "cpu")
    data = run_training_data(checkpoint)[1].data
    sums, counts = np.zeros(len(PHASES)), np.zeros(len(PHASES))
    for e in range(data.num_episodes - episodes, data.num_episodes):
        policy = MTMPolicy(model, checkpoint.run_metadata, mode="bc", action_history=action_history, num_envs=1)
        policy.reset()
        start, length = int(data.starts[e]), int(data.lengths[e])
        states, actions = data.arrays["states"][start:start + length], data.arrays["actions"][start:start + length]
        for t in range(min(length, PHASES[-1][1])):
            error = float(((policy.act(states[t:t + 1])[0] - actions[t]) ** 2).mean())
            for i, (lo, hi) in enumerate(PHASES):
                if lo <= t < hi:
                    sums[i] += error
                    counts[i] += 1
    return list(sums / np.maximum(counts, 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run or checkpoint directories")
    p.add_argument("--episodes", type=int, default=10, help="the last N episodes of the dataset (default 10)")
    args = p.parse_args()
    torch.set_num_threads(1)
    print("run | action history | " + " | ".join(f"steps {lo}-{hi - 1}" for lo, hi in PHASES))
    for run in args.runs:
        kind = load_checkpoint(run).config["model"].get("kind", "mtm")
        for history in ([True, False] if kind == "mtm" else [True]):
            errors = phase_errors(run, args.episodes, history)
            print(f"{run} | {history} | " + " | ".join(f"{e:.3f}" for e in errors))


if __name__ == "__main__":
    main()

"""Measure a task's reference returns (random and scripted expert) and the runner's throughput.

    python scripts/measure_references.py [--env Reacher-v5] [--episodes 100] [--num-envs 8]

Reference returns are the mean over episodes reset with seeds 0..N-1; they go into
envs/references.py with this command as provenance. For tasks that define success
(envs.tasks.TaskSpec.success, e.g. mtm/PusherPixels-v0) the share of episodes that end solved is
printed too. Throughput compares mtm's episode runner
(expert policy, recording every step) with raw random-action stepping of a gymnasium
SyncVectorEnv of the same size (bench_common.RandomStepper): the gap is the cost of the policy and
of recording episodes.
"""

from __future__ import annotations

# First: bench_common sets up OpenMP and MuJoCo, which must happen before torch or MuJoCo loads.
from bench_common import RandomStepper, parser_for

import numpy as np

from envs.tasks import TASKS
from mtm.rollout import EpisodeRunner, ExpertPolicy, RandomPolicy


def mean_return(runner: EpisodeRunner, policy, episodes: int, success=None) -> tuple[float, float, float, str]:
    """(mean return, its std, steps/s, "; success X %" or "" when the task defines no success)."""
    solved: dict[int, bool] = {}
    # Called after every step: the last call of an episode sees its final state.
    on_step = None if success is None else (lambda index, env: solved.__setitem__(index, bool(success(env))))
    returns = [ep.episode_return for _, ep in runner.run(policy, episodes, seed=0, on_step=on_step)]
    rate = "" if success is None else f"; success {100 * np.mean(list(solved.values())):.0f} %"
    return float(np.mean(returns)), float(np.std(returns)), runner.stats.steps_per_s, rate


def main() -> None:
    parser = parser_for(__doc__)
    parser.add_argument("--env", default="Reacher-v5")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--num-envs", type=int, default=8)
    args = parser.parse_args()

    spec = TASKS.get(args.env)
    with EpisodeRunner(args.env, args.num_envs) as runner:
        success = None if spec is None else spec.success
        random_mean, random_std, random_sps, rate = mean_return(runner, RandomPolicy(runner.action_space, seed=0),
                                                                args.episodes, success)
        print(f"{args.env} random: return {random_mean:.4f} +- {random_std:.4f} over seeds 0..{args.episodes - 1}{rate}")
        if spec is None or spec.expert is None:
            print(f"{args.env} has no scripted expert")
            return
        expert = ExpertPolicy.for_task(spec, runner.envs, runner.action_space)
        expert_mean, expert_std, expert_sps, rate = mean_return(runner, expert, args.episodes, success)
        print(f"{args.env} expert: return {expert_mean:.4f} +- {expert_std:.4f} over seeds 0..{args.episodes - 1}{rate}")
    raw = RandomStepper(args.env, "SyncVectorEnv", args.num_envs, seed=0)
    raw_sps = raw.chunk(100 * args.episodes)
    raw.close()
    print(
        f"throughput with {args.num_envs} envs: runner + expert {expert_sps:,.0f} steps/s, "
        f"runner + random {random_sps:,.0f} steps/s, raw SyncVectorEnv random actions {raw_sps:,.0f} steps/s"
    )


if __name__ == "__main__":
    main()

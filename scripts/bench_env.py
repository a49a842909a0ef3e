"""Benchmark raw environment step rates: the ceiling an evaluation loop is measured against.

For each task (gymnasium v5 MuJoCo: Hopper, HalfCheetah, Walker2d, Reacher by default) and each
K in --num-envs, two ways of stepping K environments with uniformly random actions
(bench_common.RandomStepper):

  SyncVectorEnv   gymnasium.vector.SyncVectorEnv of K envs, `envs.step(envs.action_space.sample())`
                  in a loop, autoreset mode SAME_STEP: every call is K real simulator steps
  EpisodeRunner   mtm.rollout.EpisodeRunner with mtm.rollout.RandomPolicy: what `mtm collect` and
                  evaluation use (per-episode seeding, observation copies, episode recording)

Every round runs one chunk of about --chunk-steps transitions of every setting, interleaved
(bench_common.interleave). The table gives steps/s (transitions summed over the K envs per
second); ratios compare the runner with raw stepping at the same K, and K = max with K = 1.
Everything runs in one process on one core: stepping is Python plus single-threaded MuJoCo, so
K > 1 amortises per-call overhead, it does not add parallelism.

Usage:
  python scripts/bench_env.py
  python scripts/bench_env.py --envs Hopper-v5 --num-envs 1,10 --rounds 7 --json out.json
"""

from __future__ import annotations

# First: bench_common sets up OpenMP and MuJoCo, which must happen before torch or MuJoCo loads.
from bench_common import (
    RandomStepper, add_envs, add_rounds, command_line, interleave, machine_info, parser_for, print_header, print_table,
    split_list, write_json,
)

import sys

def main() -> None:
    parser = parser_for(__doc__)
    add_envs(parser, "Hopper-v5,HalfCheetah-v5,Walker2d-v5,Reacher-v5", num_envs="1,10", chunk_steps=4000)
    parser.add_argument("--kinds", default="SyncVectorEnv,EpisodeRunner", help="which steppers to time")
    add_rounds(parser, rounds=5, warmup=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)  # nothing here uses torch's threads; keep it from spinning on the other core
    envs, ks, kinds = split_list(args.envs), split_list(args.num_envs, int), split_list(args.kinds)
    if set(kinds) - set(RandomStepper.KINDS):
        sys.exit(f"--kinds: expected SyncVectorEnv and/or EpisodeRunner, got {args.kinds}")
    command, info = command_line(), machine_info()

    steppers: dict[tuple[str, str, int], RandomStepper] = {}
    try:
        for key in [(e, kind, k) for e in envs for kind in kinds for k in ks]:
            steppers[key] = RandomStepper(*key, seed=args.seed)
        rates = interleave({key: (lambda s=s: s.chunk(args.chunk_steps)) for key, s in steppers.items()},
                           args.rounds, args.warmup)
    finally:
        for s in steppers.values():
            s.close()

    print_header(info, command)
    print(f"{args.rounds} interleaved rounds of ~{args.chunk_steps} transitions per setting after "
          f"{args.warmup} warm-up round(s); random actions; median (min-max) over rounds\n")
    kmin, kmax = min(ks), max(ks)
    rows, table = [], []
    for (env_id, kind, k), s in steppers.items():
        r = rates[(env_id, kind, k)]
        raw = rates.get((env_id, "SyncVectorEnv", k))
        vs_raw = r.median / raw.median if kind == "EpisodeRunner" and raw else None
        one = rates.get((env_id, kind, kmin))
        vs_one = r.median / one.median if k == kmax and kmax != kmin and one else None
        table.append([env_id, kind, k, f"{r.median:,.0f}", r.spread(), f"{1e6 / r.median:.1f}",
                      f"{s.mean_episode_length:.1f}", f"{vs_raw:.2f}x" if vs_raw else "",
                      f"{vs_one:.2f}x" if vs_one else ""])
        rows.append({"env": env_id, "stepper": kind, "num_envs": k, "steps_per_s": r.median,
                     "min_steps_per_s": r.low, "max_steps_per_s": r.high,
                     "steps": s.steps, "episodes": s.episodes,
                     "mean_episode_length": s.mean_episode_length,
                     "runner_over_raw": vs_raw, "kmax_over_k1": vs_one})
    print_table(["env", "stepper", "K", "steps/s", "range (min-max)", "µs/step", "mean ep len", "runner/raw",
                 "K=max/K=1"], table, align="ll")
    write_json(args.json, {"command": command, "machine": info, "rounds": args.rounds,
                           "chunk_steps": args.chunk_steps, "results": rows})


if __name__ == "__main__":
    main()

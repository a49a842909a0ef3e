"""Benchmark raw environment step rates: the ceiling an evaluation loop is measured against.

For each task (gymnasium v5 MuJoCo: Hopper, HalfCheetah, Walker2d, Reacher by default) and each
K in --num-envs, two ways of stepping K environments with uniformly random actions:

  SyncVectorEnv   gymnasium.vector.SyncVectorEnv of K envs, `envs.step(envs.action_space.sample())`
                  in a loop. Autoreset mode SAME_STEP, so every call is K real simulator steps
                  (with the default NEXT_STEP, the call after an episode ends only resets that env,
                  which would overstate the rate on tasks whose random episodes are short).
  EpisodeRunner   mtm.rollout.EpisodeRunner with mtm.rollout.RandomPolicy: what `mtm collect` and
                  evaluation use (per-episode seeding, observation copies, episode recording).

Timing is interleaved: every round runs one chunk of about --chunk-steps transitions of every
setting, in an order that rotates from round to round, so a background load on a shared machine
hits all settings alike. The table gives steps/s (transitions summed over the K envs per second)
as the median over rounds and its min-max range; ratios compare the runner with raw stepping at
the same K, and K = max with K = 1. Everything runs in one process on one core: stepping is Python
plus single-threaded MuJoCo, so K > 1 amortises per-call overhead, it does not add parallelism.

Usage:
  python scripts/bench_env.py
  python scripts/bench_env.py --envs Hopper-v5 --num-envs 1,10 --rounds 7 --json out.json
"""

from __future__ import annotations

# First: bench_common makes OpenMP wait passively, which must happen before torch loads.
from bench_common import (
    TimedSetting, calibrated_random_runner, loadavg, machine_info, random_vector_env, time_random_steps,
)

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path



DEFAULT_ENVS = "Hopper-v5,HalfCheetah-v5,Walker2d-v5,Reacher-v5"


@dataclass
class Setting(TimedSetting):
    env_id: str
    kind: str  # "SyncVectorEnv" | "EpisodeRunner"
    num_envs: int
    seconds: float = 0.0
    _next_seed: int = 0
    _mean_len: float = 0.0

    def open(self, seed: int) -> None:
        if self.kind == "SyncVectorEnv":
            self._vec = random_vector_env(self.env_id, self.num_envs, seed)
        else:
            self._runner, self._policy, self._next_seed, self._mean_len = calibrated_random_runner(
                self.env_id, self.num_envs, seed)

    def chunk(self, target_steps: int, timed: bool) -> None:
        if self.kind == "SyncVectorEnv":
            steps, episodes, elapsed = time_random_steps(self._vec, self.num_envs, target_steps)
        else:
            n = max(self.num_envs, round(target_steps / self._mean_len))
            begin = time.perf_counter()
            for _ in self._runner.run(self._policy, n, self._next_seed):
                pass
            elapsed = time.perf_counter() - begin
            self._next_seed += n
            steps, episodes = self._runner.stats.steps, n
        if timed:
            self.record(steps / elapsed, steps, episodes)
            self.seconds += elapsed

    @property
    def mean_episode_length(self) -> float:
        return self.steps / self.episodes if self.episodes else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--envs", default=DEFAULT_ENVS, help=f"comma-separated gymnasium ids (default: {DEFAULT_ENVS})")
    parser.add_argument("--num-envs", default="1,10", help="comma-separated K values (default: 1,10)")
    parser.add_argument("--kinds", default="SyncVectorEnv,EpisodeRunner", help="which steppers to time")
    parser.add_argument("--chunk-steps", type=int, default=4000, help="transitions per timed chunk (about)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (each: one chunk of every setting)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)  # nothing here uses torch's threads; keep it from spinning on the other core
    envs = [e.strip() for e in args.envs.split(",") if e.strip()]
    ks = [int(k) for k in args.num_envs.split(",")]
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if set(kinds) - {"SyncVectorEnv", "EpisodeRunner"}:
        sys.exit(f"--kinds: expected SyncVectorEnv and/or EpisodeRunner, got {args.kinds}")
    command = "OMP_WAIT_POLICY=" + os.environ["OMP_WAIT_POLICY"] + " " + shlex.join([sys.executable, *sys.argv])
    info = machine_info()

    settings = [Setting(e, kind, k) for e in envs for kind in kinds for k in ks]
    try:
        for s in settings:
            s.open(args.seed)
        for _ in range(args.warmup):
            for s in settings:
                s.chunk(args.chunk_steps, timed=False)
        for r in range(args.rounds):
            shift = r % len(settings)
            for s in settings[shift:] + settings[:shift]:
                s.chunk(args.chunk_steps, timed=True)
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    finally:
        for s in settings:
            s.close()

    print(f"\ncommand: {command}")
    print(f"machine: {info['cpu']} ({info['cpu_cores_visible']} cores visible), python {info['python']}, "
          f"gymnasium {info['gymnasium']}, mujoco {info['mujoco']}, torch threads {info['torch_threads']}")
    print(f"date {info['date']}, load average {info['loadavg_start']} at start, {loadavg()} at end")
    print(f"{args.rounds} interleaved rounds of ~{args.chunk_steps} transitions per setting after "
          f"{args.warmup} warm-up round(s); random actions\n")
    head = (f"{'env':<16} {'stepper':<14} {'K':>3} {'steps/s':>9} {'range (min-max)':>17} {'µs/step':>8} "
            f"{'mean ep len':>11}  {'runner/raw':>10} {'K=max/K=1':>9}")
    print(head)
    print("-" * len(head))
    by = {(s.env_id, s.kind, s.num_envs): s for s in settings}
    kmin, kmax = min(ks), max(ks)
    rows = []
    for s in settings:
        raw = by.get((s.env_id, "SyncVectorEnv", s.num_envs))
        vs_raw = s.median / raw.median if s.kind == "EpisodeRunner" and raw else None
        one = by.get((s.env_id, s.kind, kmin))
        vs_one = s.median / one.median if s.num_envs == kmax and kmax != kmin and one else None
        spread = f"{min(s.rates):,.0f}-{max(s.rates):,.0f}"
        print(f"{s.env_id:<16} {s.kind:<14} {s.num_envs:>3} {s.median:9,.0f} {spread:>17} {1e6 / s.median:8.1f} "
              f"{s.mean_episode_length:11.1f}  {f'{vs_raw:.2f}x' if vs_raw else '':>10} "
              f"{f'{vs_one:.2f}x' if vs_one else '':>9}")
        rows.append({"env": s.env_id, "stepper": s.kind, "num_envs": s.num_envs, "steps_per_s": s.median,
                     "min_steps_per_s": min(s.rates), "max_steps_per_s": max(s.rates),
                     "timed_steps": s.steps, "timed_episodes": s.episodes,
                     "mean_episode_length": s.mean_episode_length,
                     "runner_over_raw": vs_raw, "kmax_over_k1": vs_one})
    if args.json:
        info["loadavg_end"] = loadavg()
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": command, "machine": info, "rounds": args.rounds,
                                         "chunk_steps": args.chunk_steps, "results": rows}, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()

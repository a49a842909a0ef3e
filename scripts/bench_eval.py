"""Benchmark evaluation speed: env steps/s with the MTM policy against the raw env step rate, and act() latency.

For each task (gymnasium v5 MuJoCo; Hopper, HalfCheetah, Reacher by default) and each K in --num-envs,
these settings run side by side in one process:

  SyncVectorEnv      gymnasium.vector.SyncVectorEnv of K envs stepped with random actions
                     (autoreset SAME_STEP, as scripts/bench_env.py): the raw ceiling.
  EpisodeRunner      mtm.rollout.EpisodeRunner with RandomPolicy: the raw rate of mtm's own loop.
  eval full          mtm.evaluation.evaluate_policy with mtm.policy.MTMPolicy as it is: every
                     act() decodes every token (model.predict(batch, visible, heads=("actions",))).
  eval queries       the same, but the model decodes only the token the policy reads, the action
                     at the current step c (MTM.predict(..., queries=...)): what MTMPolicy.act
                     does with the one-line change `queries=self._queries[c]`. Here a thin
                     wrapper passes the queries (c = the number of visible action tokens, exact
                     for the bc and rcbc masks), so policy.py itself is exercised unchanged.
  eval queries bf16  the same under torch.autocast(bfloat16): faster on CPUs with AVX512-BF16 /
                     AMX, but the actions change (the max deviation from fp32 is printed).
  eval baseline      (only with --baseline-network FILE) another version of mtm/model/network.py,
                     e.g. the committed one, with the same weights: a before/after in one run.

"eval ..." rates are evaluate_policy's env_steps_per_s (simulation + policy, the runner's own
time), over --chunk-steps transitions per chunk (a whole number of episodes, a multiple of K,
calibrated from the model's own episode lengths; the same seeds for every eval setting and
round, so every eval setting runs the same episodes). The acceptance figure is
eval / SyncVectorEnv at the same K.

Latency (first env only): the median of --latency-calls calls of MTMPolicy.act (K observations,
steady state: a full window, c = L-1) and of the bare model.predict at that step, per policy variant
and torch thread count (--latency-threads).

Timing is interleaved: every round runs one chunk of every setting, in an order that rotates from
round to round, so a background load on a shared machine hits all settings alike; the figure is
the median over rounds with its min-max range.

The model: a random-init MTM of the given size (default the "small" config: width 128, 2 encoder +
1 decoder layers, 4 heads, L = 4, states + returns + actions, rcbc) with the env's dimensions
(speed does not depend on the weights; episode lengths do: an untrained policy makes Hopper fall
within tens of steps, so its episodes are reset-heavy; HalfCheetah and Reacher have fixed lengths),
or --checkpoint DIR (its env only).

Usage:
  python scripts/bench_eval.py
  git show 086ab29:mtm/model/network.py > /tmp/network_before.py   # before restricted decoding
  python scripts/bench_eval.py --baseline-network /tmp/network_before.py --json out.json
  python scripts/bench_eval.py --checkpoint runs/hopper --num-envs 10
"""

from __future__ import annotations

# First: bench_common makes OpenMP wait passively, which must happen before torch loads.
from bench_common import (
    TimedSetting, calibrated_random_runner, loadavg, machine_info, random_vector_env, time_random_steps,
)

import argparse
import contextlib
import importlib.util
import json
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from mtm.evaluation import evaluate_policy
from mtm.model.network import MTM, ModelConfig
from mtm.model.tokenizers import ContinuousTokenizer
from mtm.policy import MTMPolicy
from mtm.rollout import make_env

DEFAULT_ENVS = "HalfCheetah-v5,Hopper-v5,Reacher-v5"


# ----------------------------------------------------------------------------------------------
# Models and policies


class ModelView:
    """Changes how MTMPolicy's predict() calls reach a model, to compare decoding variants with the
    same policy code. MTMPolicy passes `queries` (the action token at the current step):
    full_decode drops them, so every token is decoded as before restricted decoding (also for the
    --baseline-network, whose predict() predates `queries`); autocast runs the call under bf16.
    Everything else is the wrapped model's (MTMPolicy reads .window, .tokenizers, .layout, ...)."""

    def __init__(self, model: Any, *, full_decode: bool = False, autocast: bool = False) -> None:
        self.model = model
        self.full_decode = full_decode
        self.autocast = autocast

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def to(self, device: Any) -> "ModelView":
        self.model.to(device)
        return self

    def eval(self) -> "ModelView":
        self.model.eval()
        return self

    def predict(self, batch, visible, valid=None, *, heads=None, queries=None):
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()
        with ctx:
            if self.full_decode:
                return self.model.predict(batch, visible, valid, heads=heads)
            return self.model.predict(batch, visible, valid, heads=heads, queries=queries)


def random_model(obs_dim: int, act_dim: int, config: ModelConfig, window: int, seed: int) -> MTM:
    toks = {
        "states": ContinuousTokenizer(obs_dim, np.zeros(obs_dim), np.ones(obs_dim), name="states"),
        "returns": ContinuousTokenizer(1, [0.0], [1.0], name="returns"),
        "actions": ContinuousTokenizer(act_dim, np.zeros(act_dim), np.ones(act_dim), name="actions"),
    }
    torch.manual_seed(seed)
    return MTM(config, toks, window).eval()


def minimal_metadata(action_space: Any) -> dict[str, Any]:
    """What MTMPolicy reads: the rtg convention, the training returns (for the rcbc target) and the
    action bounds (for clipping)."""
    return {
        "rtg": {"kind": "average", "gamma": 1.0, "horizon": 1000},
        "returns": {"episode_return": {"min": 0.0, "max": 1000.0}},
        "data_info": {"action_space": {"low": np.asarray(action_space.low).tolist(),
                                       "high": np.asarray(action_space.high).tolist()}},
    }


def load_baseline_network(path: Path, model: MTM) -> torch.nn.Module:
    """The same weights in another version of mtm/model/network.py (a file), for a before/after."""
    spec = importlib.util.spec_from_file_location("mtm_baseline_network", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    other = module.MTM.from_spec(model.spec())
    other.load_state_dict(model.state_dict())
    return other.eval()


@dataclass
class Variant:
    name: str
    model: Any  # what MTMPolicy gets
    threads: int = 1


# ----------------------------------------------------------------------------------------------
# Throughput settings


@dataclass
class Setting(TimedSetting):
    env_id: str
    kind: str  # "SyncVectorEnv" | "EpisodeRunner" | "eval <variant>"
    num_envs: int
    variant: Variant | None = None
    metadata: dict | None = None
    returns: list[float] = field(default_factory=list)
    _policy: Any = None
    _next_seed: int = 0
    chunk_episodes: int = 0

    def open(self, seed: int, chunk_steps: int, eval_episode_length: float | None) -> None:
        if self.kind == "SyncVectorEnv":
            self._vec = random_vector_env(self.env_id, self.num_envs, seed)
        elif self.kind == "EpisodeRunner":
            self._runner, self._policy, self._next_seed, mean_length = calibrated_random_runner(
                self.env_id, self.num_envs, seed)
            self.chunk_episodes = max(self.num_envs, round(chunk_steps / mean_length))
        else:
            # A whole number of rounds of K episodes: every env slot busy until the chunk's end
            # (the tail of a run, where fewer episodes remain than envs, is part of evaluation too).
            per_round = self.num_envs * eval_episode_length
            self.chunk_episodes = self.num_envs * max(1, round(chunk_steps / per_round))

    def chunk(self, seed: int, chunk_steps: int, timed: bool) -> None:
        if self.kind == "SyncVectorEnv":
            steps, episodes, elapsed = time_random_steps(self._vec, self.num_envs, chunk_steps)
            rate = steps / elapsed
        elif self.kind == "EpisodeRunner":
            n = self.chunk_episodes
            for _ in self._runner.run(self._policy, n, self._next_seed):
                pass
            self._next_seed += n
            rate, steps, episodes = self._runner.stats.steps_per_s, self._runner.stats.steps, n
        else:
            report = run_eval(self, self.chunk_episodes, seed)
            rate, episodes = report["env_steps_per_s"], report["episodes"]
            steps = int(round(report["length_mean"] * episodes))
            if timed:
                self.returns.append(report["return_mean"])
        if timed:
            self.record(rate, steps, episodes)


def run_eval(s: Setting, episodes: int, seed: int) -> dict[str, Any]:
    v = s.variant
    torch.set_num_threads(v.threads)

    def factory(slots: int) -> MTMPolicy:
        return MTMPolicy(v.model, s.metadata, num_envs=slots)

    return evaluate_policy(factory, s.metadata, s.env_id, episodes=episodes, num_envs=s.num_envs, seed=seed)


# ----------------------------------------------------------------------------------------------
# Latency


@dataclass
class Latency:
    env_id: str
    what: str  # "act" | "predict"
    num_envs: int
    variant: Variant
    threads: int
    metadata: dict
    observations: np.ndarray
    medians: list[float] = field(default_factory=list)  # seconds, one per round
    _policy: MTMPolicy | None = None
    _call: Callable[[], Any] | None = None

    def open(self) -> None:
        policy = MTMPolicy(self.variant.model, self.metadata, num_envs=self.num_envs)
        policy.reset()
        for _ in range(policy.window):  # fill the window: steady state, c = L-1
            policy.act(self.observations)
        self._policy = policy
        if self.what == "act":
            self._call = lambda: policy.act(self.observations)
            return
        # The bare network call of one act() at c = L-1, on the policy's own buffers.
        L, k = policy.window, self.num_envs
        batch = {"states": policy.states, "actions": policy.actions, "returns": policy.returns,
                 "timesteps": policy.steps[:, None] - (L - 1) + torch.arange(L)[None, :]}
        if "returns" not in policy.model.tokenizers:
            del batch["returns"]
        visible = policy._masks[torch.full((k,), L - 1)]
        self._call = lambda: policy.model.predict(batch, visible, heads=("actions",))

    def measure(self, calls: int) -> None:
        torch.set_num_threads(self.threads)
        for _ in range(max(3, calls // 10)):
            self._call()
        times = []
        for _ in range(calls):
            begin = time.perf_counter()
            self._call()
            times.append(time.perf_counter() - begin)
        self.medians.append(statistics.median(times))

    @property
    def median_us(self) -> float:
        return statistics.median(self.medians) * 1e6


def action_deviation(variant: Variant, reference: Variant, metadata: dict, obs: np.ndarray) -> float:
    """Max |action difference| of one steady-state act() of two variants on the same inputs."""
    out = []
    for v in (variant, reference):
        torch.set_num_threads(1)
        p = MTMPolicy(v.model, metadata, num_envs=len(obs))
        p.reset()
        for t in range(p.window):
            a = p.act(obs + 0.1 * t)
        out.append(a)
    return float(np.abs(out[0] - out[1]).max())


# ----------------------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--envs", default=DEFAULT_ENVS, help=f"comma-separated gymnasium ids (default: {DEFAULT_ENVS})")
    parser.add_argument("--num-envs", default="10,1", help="comma-separated K values (default: 10,1)")
    parser.add_argument("--checkpoint", type=Path,
                        help="evaluate this checkpoint (its env) instead of a random-init model")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--encoder-layers", type=int, default=2)
    parser.add_argument("--decoder-layers", type=int, default=1)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--variants", default="full,queries,queries-bf16",
                        help="policy variants to time: full, queries, queries-bf16 "
                             "(+ baseline with --baseline-network)")
    parser.add_argument("--baseline-network", type=Path,
                        help="another mtm/model/network.py (e.g. `git show 086ab29:mtm/model/network.py > FILE`) "
                             "to time with the same weights")
    parser.add_argument("--threads", type=int, default=1, help="torch threads during the eval settings (default 1)")
    parser.add_argument("--latency-threads", default="1,2", help="torch thread counts for the latency table")
    parser.add_argument("--latency-calls", type=int, default=200, help="calls per latency measurement and round")
    parser.add_argument("--chunk-steps", type=int, default=3000, help="transitions per timed chunk (about)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (each: one chunk of every setting)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    ks = _ints(args.num_envs)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.baseline_network is not None and "baseline" not in names:
        names.insert(0, "baseline")
    unknown = set(names) - {"full", "queries", "queries-bf16", "baseline"}
    if unknown or ("baseline" in names and args.baseline_network is None):
        sys.exit(f"--variants: unknown {sorted(unknown)} (baseline needs --baseline-network)")
    command = "OMP_WAIT_POLICY=" + os.environ["OMP_WAIT_POLICY"] + " " + shlex.join([sys.executable, *sys.argv])
    info = machine_info()

    # One model per env (the dimensions differ), shared by every variant.
    per_env: dict[str, tuple[dict, dict[str, Variant], np.ndarray]] = {}
    if args.checkpoint is not None:
        from mtm.checkpoint import load_checkpoint
        from mtm.policy import load_model

        checkpoint = load_checkpoint(args.checkpoint)
        envs = [checkpoint.metadata["env_id"]]
        models = {envs[0]: (load_model(checkpoint), checkpoint.metadata)}
    else:
        envs = [e.strip() for e in args.envs.split(",") if e.strip()]
        config = ModelConfig(width=args.width, encoder_layers=args.encoder_layers,
                             decoder_layers=args.decoder_layers, heads=args.heads)
        models = {}
        for env_id in envs:
            env = make_env(env_id)
            obs_dim, act_dim = int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape))
            models[env_id] = (random_model(obs_dim, act_dim, config, args.window, args.seed),
                              minimal_metadata(env.action_space))
            env.close()
    for env_id, (model, metadata) in models.items():
        if not isinstance(model, MTM):
            sys.exit(f"{env_id}: the checkpoint's model is a {type(model).__name__}, not an MTM: nothing to compare")
        variants = {
            "full": Variant("full", ModelView(model, full_decode=True)),
            "queries": Variant("queries", model),
            "queries-bf16": Variant("queries-bf16", ModelView(model, autocast=True)),
        }
        if args.baseline_network is not None:
            baseline = load_baseline_network(args.baseline_network, model)
            variants["baseline"] = Variant("baseline", ModelView(baseline, full_decode=True))
        env = make_env(env_id)
        obs = np.stack([env.reset(seed=args.seed + i)[0] for i in range(max(ks))]).astype(np.float32)
        env.close()
        per_env[env_id] = (metadata, {n: variants[n] for n in names}, obs)
    params = next(iter(models.values()))[0].num_parameters()

    # Sanity: restricted decoding gives the full forward's actions; bf16 does not quite.
    deviations = {}
    for env_id, (metadata, variants, obs) in per_env.items():
        reference = Variant("full", ModelView(models[env_id][0], full_decode=True))
        for name, v in variants.items():
            if name != "full":
                deviations[(env_id, name)] = action_deviation(v, reference, metadata, obs[: max(ks)])

    settings: list[Setting] = []
    for env_id, (metadata, variants, _) in per_env.items():
        for k in ks:
            settings.append(Setting(env_id, "SyncVectorEnv", k))
            settings.append(Setting(env_id, "EpisodeRunner", k))
            for name, v in variants.items():
                settings.append(Setting(env_id, f"eval {name}", k, variant=v, metadata=metadata))
    latencies: list[Latency] = []
    for env_id, (metadata, variants, obs) in list(per_env.items())[:1]:  # the network's cost barely depends on the env
        for k in ks:
            for what in ("act", "predict"):
                for name, v in variants.items():
                    for threads in _ints(args.latency_threads):
                        latencies.append(Latency(env_id, what, k, v, threads, metadata, obs[:k]))

    t0 = time.perf_counter()
    try:
        # Calibrate the eval chunks on the model's own episode lengths (one eval of K episodes).
        lengths = {}
        for env_id, (metadata, variants, _) in per_env.items():
            probe = Setting(env_id, "eval", max(ks), variant=next(iter(variants.values())), metadata=metadata)
            lengths[env_id] = run_eval(probe, max(ks), args.seed)["length_mean"]
        for s in settings:
            s.open(args.seed, args.chunk_steps, lengths[s.env_id])
        for lat in latencies:
            lat.open()
        items: list[Any] = [*settings, *latencies]
        for r in range(args.warmup + args.rounds):
            timed = r >= args.warmup
            shift = r % len(items)
            for item in items[shift:] + items[:shift]:
                if isinstance(item, Setting):
                    item.chunk(args.seed, args.chunk_steps, timed)
                elif timed:
                    item.measure(args.latency_calls)
                else:
                    item.measure(max(10, args.latency_calls // 10))
                    item.medians.clear()
            torch.set_num_threads(args.threads)
            print(f"round {r + 1}/{args.warmup + args.rounds} {'done' if timed else '(warm-up) done'} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        for s in settings:
            s.close()

    cfg = next(iter(models.values()))[0].config
    print(f"\ncommand: {command}")
    print(f"machine: {info['cpu']} ({info['cpu_cores_visible']} cores visible), python {info['python']}, "
          f"torch {info['torch']}, gymnasium {info['gymnasium']}, mujoco {info['mujoco']}")
    print(f"date {info['date']}, load average {info['loadavg_start']} at start, {loadavg()} at end, "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"model: {'checkpoint ' + str(args.checkpoint) if args.checkpoint else 'random init'}, width {cfg.width}, "
          f"{cfg.encoder_layers} + {cfg.decoder_layers} layers, {cfg.heads} heads, L = "
          f"{next(iter(models.values()))[0].window}, {params:,} parameters; eval at {args.threads} torch thread(s)")
    print(f"{args.rounds} interleaved rounds after {args.warmup} warm-up round(s); median (min-max) over rounds\n")

    head = (f"{'env':<15} {'K':>3} {'setting':<19} {'steps/s':>8} {'range (min-max)':>16} {'ep len':>7} "
            f"{'/SyncVec':>8} {'/Runner':>8} {'return':>9}")
    print(head)
    print("-" * len(head))
    by = {(s.env_id, s.kind, s.num_envs): s for s in settings}
    rows = []
    for s in settings:
        raw, runner = by[(s.env_id, "SyncVectorEnv", s.num_envs)], by[(s.env_id, "EpisodeRunner", s.num_envs)]
        vs_raw, vs_runner = s.median / raw.median, s.median / runner.median
        spread = f"{min(s.rates):,.0f}-{max(s.rates):,.0f}"
        ret = f"{statistics.median(s.returns):9.1f}" if s.returns else ""
        # SyncVectorEnv's episodes run across chunk boundaries (and the warm-up): no length for it.
        ep_len = s.steps / s.episodes if s.episodes and s.kind != "SyncVectorEnv" else float("nan")
        print(f"{s.env_id:<15} {s.num_envs:>3} {s.kind:<19} {s.median:8,.0f} {spread:>16} {ep_len:7.1f} "
              f"{vs_raw:7.2f}x {vs_runner:7.2f}x {ret}")
        rows.append({"env": s.env_id, "num_envs": s.num_envs, "setting": s.kind, "steps_per_s": s.median,
                     "min_steps_per_s": min(s.rates), "max_steps_per_s": max(s.rates),
                     "mean_episode_length": ep_len, "over_sync_vector_env": vs_raw, "over_episode_runner": vs_runner,
                     "return_mean": statistics.median(s.returns) if s.returns else None})

    print()
    base_name = "baseline" if "baseline" in names else "full"
    head = (f"{'env':<15} {'K':>3} {'call':<8} {'variant':<13} {'thr':>3} {'median µs':>10} {'range (min-max)':>16} "
            f"{f'vs {base_name}':>12}")
    print(head)
    print("-" * len(head))
    lat_by = {(x.env_id, x.what, x.num_envs, x.variant.name, x.threads): x for x in latencies}
    lat_rows = []
    for x in latencies:
        ref = lat_by.get((x.env_id, x.what, x.num_envs, base_name, x.threads))
        speedup = ref.median_us / x.median_us if ref else None
        spread = f"{min(x.medians) * 1e6:,.0f}-{max(x.medians) * 1e6:,.0f}"
        print(f"{x.env_id:<15} {x.num_envs:>3} {x.what + '()':<8} {x.variant.name:<13} {x.threads:>3} "
              f"{x.median_us:10,.0f} {spread:>16} {f'{speedup:.2f}x' if speedup else '':>12}")
        lat_rows.append({"env": x.env_id, "num_envs": x.num_envs, "call": x.what, "variant": x.variant.name,
                         "threads": x.threads, "median_us": x.median_us,
                         "min_us": min(x.medians) * 1e6, "max_us": max(x.medians) * 1e6,
                         f"speedup_vs_{base_name}": speedup})

    print("\nmax |action - full fp32 action| of one steady-state act():")
    for (env_id, name), d in deviations.items():
        print(f"  {env_id:<15} {name:<13} {d:.2e}")

    if args.json:
        info["loadavg_end"] = loadavg()
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "command": command, "machine": info, "rounds": args.rounds, "chunk_steps": args.chunk_steps,
            "model": {"checkpoint": str(args.checkpoint) if args.checkpoint else None, "config": cfg.__dict__,
                      "parameters": params},
            "throughput": rows, "latency": lat_rows,
            "action_deviation": [{"env": e, "variant": n, "max_abs": d} for (e, n), d in deviations.items()],
        }, indent=2, default=str))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()

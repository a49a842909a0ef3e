"""Benchmark evaluation speed: env steps/s with the MTM policy against the raw env step rate, and act() latency.

For each task (gymnasium v5 MuJoCo; Hopper, HalfCheetah, Reacher by default) and each K in --num-envs,
these settings run side by side in one process:

  SyncVectorEnv      gymnasium.vector.SyncVectorEnv of K envs stepped with random actions
                     (bench_common.RandomStepper, as scripts/bench_env.py): the raw ceiling.
  EpisodeRunner      mtm.rollout.EpisodeRunner with RandomPolicy: the raw rate of mtm's own loop.
  eval full          mtm.evaluation.evaluate_policy with mtm.policy.MTMPolicy, but every act()
                     decodes every token: a thin model wrapper drops the `queries` MTMPolicy
                     passes (what act() did before restricted decoding).
  eval queries       the same with MTMPolicy as it is: the model decodes only the token the
                     policy reads, the action at the current step c (MTM.predict(..., queries=...)).
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
steady state: a full window, c = L-1) and of the bare model.predict of that act()
(bench_common.predict_call), per policy variant and torch thread count (--latency-threads).

Every round runs one chunk of every setting and one latency measurement of every variant,
interleaved (bench_common.interleave); figures are medians over rounds with their min-max range.

The model: a random-init MTM of the given size (default the "small" config: width 128, 2 encoder +
1 decoder layers, 4 heads, L = 4, states + returns + actions, rcbc) with the env's dimensions
(bench_common.random_model), or --checkpoint DIR (its env only).

Usage:
  python scripts/bench_eval.py
  git show 086ab29:mtm/model/network.py > /tmp/network_before.py   # before restricted decoding
  python scripts/bench_eval.py --baseline-network /tmp/network_before.py --json out.json
  python scripts/bench_eval.py --checkpoint runs/hopper --num-envs 10
"""

from __future__ import annotations

# First: bench_common sets up OpenMP and MuJoCo, which must happen before torch or MuJoCo loads.
from bench_common import (
    RandomStepper, add_envs, add_rounds, command_line, interleave, machine_info, median_time, minimal_metadata,
    parser_for, predict_call, print_header, print_table, random_model, split_list, steady_policy, write_json,
)

import contextlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from mtm.evaluation import evaluate_policy
from mtm.model.network import MTM, ModelConfig
from mtm.policy import MTMPolicy
from mtm.rollout import make_env
from mtm.run_metadata import RunMetadata

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


def load_baseline_network(path: Path, model: MTM) -> torch.nn.Module:
    """The same weights in another version of mtm/model/network.py (a file), for a before/after."""
    spec = importlib.util.spec_from_file_location("mtm_baseline_network", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    other = module.MTM.from_spec(model.spec())
    other.load_state_dict(model.state_dict())
    return other.eval()


def variants_of(model: MTM, baseline_network: Path | None) -> dict[str, Any]:
    """What MTMPolicy gets for each policy variant, all with the same weights."""
    variants = {"full": ModelView(model, full_decode=True), "queries": model,
                "queries-bf16": ModelView(model, autocast=True)}
    if baseline_network is not None:
        variants["baseline"] = ModelView(load_baseline_network(baseline_network, model), full_decode=True)
    return variants


def eval_chunk(model: Any, metadata: RunMetadata, env_id: str, num_envs: int, episodes: int, seed: int,
               threads: int) -> dict[str, Any]:
    """One evaluate_policy run of `episodes` episodes on K envs: its report."""
    torch.set_num_threads(threads)
    return evaluate_policy(lambda slots: MTMPolicy(model, metadata, num_envs=slots), metadata, env_id,
                           episodes=episodes, num_envs=num_envs, seed=seed)


def action_deviation(model: Any, reference: Any, metadata: RunMetadata, obs: np.ndarray) -> float:
    """Max |action difference| of one steady-state act() of two variants on the same inputs."""
    out = []
    for m in (model, reference):
        torch.set_num_threads(1)
        p = MTMPolicy(m, metadata, num_envs=len(obs))
        p.reset()
        for t in range(p.window):
            a = p.act(obs + 0.1 * t)
        out.append(a)
    return float(np.abs(out[0] - out[1]).max())


@dataclass
class EvalCase:
    """A setting "eval <variant>": a whole number of rounds of K episodes per chunk, so every env
    slot is busy until the chunk's end (the tail of a run, where fewer episodes remain than envs,
    is part of evaluation too)."""

    model: Any
    metadata: RunMetadata
    env_id: str
    num_envs: int
    episodes: int
    seed: int
    threads: int

    def __post_init__(self) -> None:
        self.reports: list[dict] = []

    def chunk(self) -> float:
        report = eval_chunk(self.model, self.metadata, self.env_id, self.num_envs, self.episodes, self.seed,
                            self.threads)
        self.reports.append(report)
        return report["env_steps_per_s"]


def main() -> None:
    parser = parser_for(__doc__)
    add_envs(parser, "HalfCheetah-v5,Hopper-v5,Reacher-v5", num_envs="10,1", chunk_steps=3000)
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
    add_rounds(parser, rounds=5, warmup=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    ks = split_list(args.num_envs, int)
    names = split_list(args.variants)
    if args.baseline_network is not None and "baseline" not in names:
        names.insert(0, "baseline")
    unknown = set(names) - {"full", "queries", "queries-bf16", "baseline"}
    if unknown or ("baseline" in names and args.baseline_network is None):
        sys.exit(f"--variants: unknown {sorted(unknown)} (baseline needs --baseline-network)")
    command, info = command_line(), machine_info()

    # One model per env (the dimensions differ), shared by every variant.
    if args.checkpoint is not None:
        from mtm.checkpoint import load_checkpoint
        from mtm.policy import load_model

        checkpoint = load_checkpoint(args.checkpoint)
        models = {checkpoint.run_metadata.env_id: (load_model(checkpoint), checkpoint.run_metadata)}
    else:
        config = ModelConfig(width=args.width, encoder_layers=args.encoder_layers,
                             decoder_layers=args.decoder_layers, heads=args.heads)
        models = {}
        for env_id in split_list(args.envs):
            env = make_env(env_id)
            obs_dim, act_dim = int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape))
            models[env_id] = (random_model(obs_dim, act_dim, config, args.window, args.seed),
                              minimal_metadata(env.action_space))
            env.close()
    per_env: dict[str, tuple[RunMetadata, dict[str, Any], np.ndarray]] = {}
    for env_id, (model, metadata) in models.items():
        if not isinstance(model, MTM):
            sys.exit(f"{env_id}: the checkpoint's model is a {type(model).__name__}, not an MTM: nothing to compare")
        variants = variants_of(model, args.baseline_network)
        env = make_env(env_id)
        obs = np.stack([env.reset(seed=args.seed + i)[0] for i in range(max(ks))]).astype(np.float32)
        env.close()
        per_env[env_id] = (metadata, {n: variants[n] for n in names}, obs)
    first_model = next(iter(models.values()))[0]
    params = first_model.num_parameters()

    # Sanity: restricted decoding gives the full forward's actions; bf16 does not quite.
    deviations = {}
    for env_id, (metadata, variants, obs) in per_env.items():
        reference = ModelView(models[env_id][0], full_decode=True)
        for name, v in variants.items():
            if name != "full":
                deviations[(env_id, name)] = action_deviation(v, reference, metadata, obs)

    steppers: dict[tuple[str, str, int], RandomStepper] = {}
    cases: dict[tuple, Callable[[], float | None]] = {}
    evals: dict[tuple[str, str, int], EvalCase] = {}
    try:
        for env_id, (metadata, variants, _) in per_env.items():
            # Chunks are calibrated on the model's own episode lengths (one eval of K episodes).
            length = eval_chunk(next(iter(variants.values())), metadata, env_id, max(ks), max(ks), args.seed,
                                args.threads)["length_mean"]
            for k in ks:
                for kind in RandomStepper.KINDS:
                    stepper = steppers[(env_id, kind, k)] = RandomStepper(env_id, kind, k, args.seed)
                    cases[(env_id, kind, k)] = lambda s=stepper: s.chunk(args.chunk_steps)
                episodes = k * max(1, round(args.chunk_steps / (k * length)))
                for name, v in variants.items():
                    e = evals[(env_id, f"eval {name}", k)] = EvalCase(v, metadata, env_id, k, episodes, args.seed,
                                                                       args.threads)
                    cases[(env_id, f"eval {name}", k)] = e.chunk
        # Latencies on the first env only: the network's cost barely depends on the env.
        env_id, (metadata, variants, obs) = next(iter(per_env.items()))
        for k in ks:
            for name, v in variants.items():
                policy = steady_policy(v, metadata, obs[:k])
                calls = {"act": lambda p=policy, o=obs[:k]: p.act(o), "predict": predict_call(policy)}
                for what, call in calls.items():
                    for threads in split_list(args.latency_threads, int):
                        def latency(call=call, threads=threads) -> float:
                            torch.set_num_threads(threads)
                            seconds = median_time(call, args.latency_calls, warmup=max(3, args.latency_calls // 10))
                            torch.set_num_threads(args.threads)
                            return seconds

                        cases[("latency", env_id, k, what, name, threads)] = latency
        results = interleave(cases, args.rounds, args.warmup)
    finally:
        for s in steppers.values():
            s.close()

    cfg = first_model.config
    print_header(info, command)
    print(f"model: {'checkpoint ' + str(args.checkpoint) if args.checkpoint else 'random init'}, width {cfg.width}, "
          f"{cfg.encoder_layers} + {cfg.decoder_layers} layers, {cfg.heads} heads, L = {first_model.window}, "
          f"{params:,} parameters; eval at {args.threads} torch thread(s)")
    print(f"{args.rounds} interleaved rounds after {args.warmup} warm-up round(s); median (min-max) over rounds\n")

    rows, table = [], []
    for key, r in results.items():
        if key[0] == "latency":
            continue
        env_id, kind, k = key
        raw, runner = results[(env_id, "SyncVectorEnv", k)], results[(env_id, "EpisodeRunner", k)]
        vs_raw, vs_runner = r.median / raw.median, r.median / runner.median
        e = evals.get(key)
        timed = e.reports[args.warmup:] if e else []
        ret = float(np.median([rep["return_mean"] for rep in timed])) if timed else None
        if e:
            ep_len = (sum(rep["length_mean"] * rep["episodes"] for rep in timed)
                      / sum(rep["episodes"] for rep in timed))
        else:  # SyncVectorEnv's episodes run across chunk boundaries: no length for it
            ep_len = steppers[key].mean_episode_length if kind == "EpisodeRunner" else float("nan")
        table.append([env_id, k, kind, f"{r.median:,.0f}", r.spread(), f"{ep_len:.1f}" if ep_len == ep_len else "",
                      f"{vs_raw:.2f}x", f"{vs_runner:.2f}x", f"{ret:.1f}" if ret is not None else ""])
        rows.append({"env": env_id, "num_envs": k, "setting": kind, "steps_per_s": r.median,
                     "min_steps_per_s": r.low, "max_steps_per_s": r.high,
                     "mean_episode_length": ep_len, "over_sync_vector_env": vs_raw, "over_episode_runner": vs_runner,
                     "return_mean": ret})
    print_table(["env", "K", "setting", "steps/s", "range (min-max)", "ep len", "/SyncVec", "/Runner", "return"],
                table, align="lrl")

    print()
    base_name = "baseline" if "baseline" in names else "full"
    lat_rows, table = [], []
    for key, r in results.items():
        if key[0] != "latency":
            continue
        _, env_id, k, what, name, threads = key
        ref = results.get(("latency", env_id, k, what, base_name, threads))
        speedup = ref.median / r.median if ref else None
        table.append([env_id, k, what + "()", name, threads, f"{r.median * 1e6:,.0f}", r.spread(scale=1e6),
                      f"{speedup:.2f}x" if speedup else ""])
        lat_rows.append({"env": env_id, "num_envs": k, "call": what, "variant": name, "threads": threads,
                         "median_us": r.median * 1e6, "min_us": r.low * 1e6, "max_us": r.high * 1e6,
                         f"speedup_vs_{base_name}": speedup})
    print_table(["env", "K", "call", "variant", "thr", "median µs", "range (min-max)", f"vs {base_name}"], table,
                align="lrll")

    print("\nmax |action - full fp32 action| of one steady-state act():")
    for (env_id, name), d in deviations.items():
        print(f"  {env_id:<15} {name:<13} {d:.2e}")

    write_json(args.json, {
        "command": command, "machine": info, "rounds": args.rounds, "chunk_steps": args.chunk_steps,
        "model": {"checkpoint": str(args.checkpoint) if args.checkpoint else None, "config": cfg.__dict__,
                  "parameters": params},
        "throughput": rows, "latency": lat_rows,
        "action_deviation": [{"env": e, "variant": n, "max_abs": d} for (e, n), d in deviations.items()],
    })


if __name__ == "__main__":
    main()

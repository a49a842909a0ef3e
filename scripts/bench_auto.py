"""`precision: auto` against fp32 for every built-in config: training steps/s and evaluation env steps/s.

`auto` must never be the slower choice (issue #22, part 3). For each built-in config this builds the
run as `mtm train` does (its data, model, optimiser and training step; random initial weights: speed
does not depend on them) and times, side by side in one process (bench_common.interleave: rounds
in rotating order, medians):

  train auto / fp32   the training step at the config's batch size, at the precision `auto`
                      resolves to for training (mtm.training.loop) and at fp32
  eval auto / fp32    mtm's evaluation loop (mtm.evaluation.evaluate_policy: the vectorised envs
                      and MTMPolicy, as `mtm eval` runs it) over --episodes episodes in --num-envs
                      envs, at the precision `auto` resolves to for that policy and at fp32

Where auto resolves to fp32 both sides run the same code and the ratio only shows the noise. Data:
Reacher-v5 and mtm/ReacherPixels-v0 (the pixel configs), --collect episodes of the scripted expert
each, collected into a scratch folder first (their 50-step episodes make every chunk the same
length, whatever the random-init policy does).

Usage:
  python scripts/bench_auto.py                                    # every built-in config
  python scripts/bench_auto.py --configs small,mlp-bc --rounds 3 --json auto.json
"""

from __future__ import annotations

# First: bench_common sets up OpenMP and MuJoCo, which must happen before torch or MuJoCo loads.
from bench_common import (
    add_rounds, command_line, interleave, machine_info, parser_for, print_header, print_table, run_command,
    split_list, write_json,
)

import sys
import tempfile
from pathlib import Path

import torch

from bench_train import Setting, build_group, load_data
from mtm.config import RunConfig, builtin_configs, load_config, resolve_config_path
from mtm.evaluation.rollouts import evaluate_policy
from mtm.hardware import resolve_precision
from mtm.policy import MTMPolicy
from mtm.policy_config import PolicyConfig
from mtm.rollout import PixelSpec
from mtm.training.metadata import run_metadata

ROOT = Path(__file__).resolve().parents[1]
STATE_ENV, PIXEL_ENV = "Reacher-v5", "mtm/ReacherPixels-v0"


def collect(env_id: str, episodes: int, path: Path) -> Path:
    """`mtm collect` of the scripted expert (the pixel env renders its frames itself)."""
    if not path.exists():
        code, _, _ = run_command([sys.executable, "-m", "mtm", "collect", "--env", env_id, "--policy", "expert",
                                  "--episodes", episodes, "--num-envs", 4, "--output", path, "--no-progress"],
                                 env={}, cwd=ROOT)
        if code:
            sys.exit(f"collecting {env_id} failed (exit code {code})")
    return path


# The built-in configs made for image observations (their YAML comments say so); the others read states.
IMAGE_CONFIGS = {"pixels", "cnn-bc"}


def measure(name: str, data_path: Path, args, device: torch.device) -> dict:
    cfg = load_config(RunConfig, resolve_config_path(name), [f"data.path={data_path}"])
    run = load_data(cfg, device)
    group = build_group(name, cfg, cfg.train.batch_size, run, device)
    model = group.model
    train_auto = resolve_precision("auto", device, fp32_only=model.fp32_only)
    trains = {p: Setting(group, p, threads=args.threads, compile=False) for p in dict.fromkeys([train_auto.dtype, "fp32"])}
    for s in trains.values():
        s.first_call()
    # Blocks of about --train-seconds each (at least one step): reference's 2048-window steps take
    # seconds on a CPU, an MLP's milliseconds.
    steps = max(1, round(args.train_seconds / min(s.first_step_s for s in trains.values())))

    def train_block(setting: Setting) -> float:
        model.train()  # the evaluations between the blocks put it in eval mode
        return 1.0 / setting.run_block(steps)

    train_cases = {f"train {label}": (lambda s=trains[dtype]: train_block(s))
                   for label, dtype in (("auto", train_auto.dtype), ("fp32", "fp32"))}

    metadata = run_metadata(cfg, run, model)
    env_id, pixels = metadata.env_id, PixelSpec.from_dict(metadata.data_info.pixels)
    policies = {p: PolicyConfig(mode="auto", precision=p) for p in ("auto", "fp32")}

    def factory_for(policy: PolicyConfig):
        return lambda slots: MTMPolicy(model, metadata, policy, num_envs=slots, device=device)

    eval_auto = factory_for(policies["auto"])(args.num_envs).precision
    eval_cases = {f"eval {p}": (lambda p=p: evaluate_policy(
        factory_for(policies[p]), metadata, env_id, episodes=args.episodes, num_envs=args.num_envs, seed=0,
        pixels=pixels)["env_steps_per_s"]) for p in policies}
    torch.set_num_threads(args.threads)
    samples = interleave({**train_cases, **eval_cases}, args.rounds, args.warmup, log=None)
    batch = cfg.train.batch_size
    return {
        "config": name, "env": env_id, "batch_size": batch, "num_envs": args.num_envs,
        "train_auto": train_auto.to_dict(), "eval_auto": eval_auto.to_dict(),
        "train_samples_per_s": {k.split()[1]: batch * samples[k].median for k in train_cases},
        "train_range": {k.split()[1]: [batch * samples[k].low, batch * samples[k].high] for k in train_cases},
        "eval_env_steps_per_s": {k.split()[1]: samples[k].median for k in eval_cases},
        "eval_range": {k.split()[1]: [samples[k].low, samples[k].high] for k in eval_cases},
    }


def main() -> None:
    parser = parser_for(__doc__)
    parser.add_argument("--configs", default=",".join(builtin_configs()), help="comma-separated built-in configs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-seconds", type=float, default=1.0, help="about this long a timed training block")
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes per timed block")
    parser.add_argument("--num-envs", type=int, default=10)
    parser.add_argument("--collect", type=int, default=30, help="expert episodes collected per env")
    parser.add_argument("--scratch", type=Path, help="folder for the collected data (default: a temporary one)")
    add_rounds(parser, rounds=3, warmup=1)
    args = parser.parse_args()
    names = split_list(args.configs)
    unknown = sorted(set(names) - set(builtin_configs()))
    if unknown:
        sys.exit(f"--configs: not built-in: {', '.join(unknown)} (built-in: {', '.join(builtin_configs())})")
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    command, info = command_line(), machine_info(device)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = args.scratch or Path(tmp)
        scratch.mkdir(parents=True, exist_ok=True)
        data = {False: collect(STATE_ENV, args.collect, scratch / "reacher.hdf5"),
                True: collect(PIXEL_ENV, args.collect, scratch / "reacher-pixels.hdf5")}
        results = []
        for name in names:
            print(f"{name} ...", flush=True)
            results.append(measure(name, data[name in IMAGE_CONFIGS], args, device))
    print_header(info, command)
    print(f"timing: {args.warmup} warm-up round(s), then {args.rounds} interleaved rounds; medians; "
          f"training blocks of ~{args.train_seconds:g} s, evaluation {args.episodes} episodes in {args.num_envs} envs")
    rows = []
    for r in results:
        t, e = r["train_samples_per_s"], r["eval_env_steps_per_s"]
        rows.append([r["config"], r["env"], r["train_auto"]["dtype"], f"{t['auto']:,.0f}", f"{t['fp32']:,.0f}",
                     f"{t['auto'] / t['fp32']:.2f}x", r["eval_auto"]["dtype"], f"{e['auto']:,.0f}", f"{e['fp32']:,.0f}",
                     f"{e['auto'] / e['fp32']:.2f}x"])
    print_table(["config", "env", "train: auto is", "auto samples/s", "fp32 samples/s", "auto / fp32",
                 "eval: auto is", "auto env steps/s", "fp32 env steps/s", "auto / fp32"], rows, align="lllrrrlrrr")
    for r in results:
        print(f"  {r['config']}: training {r['train_auto']['reason']}; evaluation {r['eval_auto']['reason']}")
    write_json(args.json, {"command": command, "machine": info, "results": results})


if __name__ == "__main__":
    main()

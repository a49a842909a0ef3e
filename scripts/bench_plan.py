"""One checkpoint as a policy in several modes or plan settings, one after another: score and speed.

Each setting is a JSON object of PolicyConfig fields ({"mode": "rcbc"}, {"mode": "plan",
"plan_horizon": 2}, ...), evaluated by `mtm.evaluation.evaluate_checkpoint` exactly as `mtm eval`
does: the final checkpoint, --episodes episodes in --num-envs envs, reset seeds --seed ..., one
torch thread. Prints the normalised score (mean +/- std over episodes), the mean episode length and
the env steps/s of each setting (the figures of BENCHMARKS.md, "Beyond the data").

Usage:
  python scripts/bench_plan.py runs/hopper --episodes 20 '{"mode": "rcbc"}' '{"mode": "plan"}'
"""

from __future__ import annotations

# First: bench_common makes OpenMP wait passively, which must happen before torch loads.
from bench_common import command_line, machine_info, parser_for, print_header, print_table, write_json

import json
from pathlib import Path

import torch

from mtm.checkpoint import load_checkpoint
from mtm.evaluation import evaluate_checkpoint
from mtm.policy_config import PolicyConfig


def main() -> None:
    parser = parser_for(__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("settings", nargs="+", help="JSON objects of PolicyConfig fields")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--num-envs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the policy's device)")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    command, info = command_line(), machine_info(args.device)
    checkpoint = load_checkpoint(args.checkpoint)
    rows, records = [], []
    for text in args.settings:
        setting = json.loads(text)
        report = evaluate_checkpoint(checkpoint, episodes=args.episodes, num_envs=args.num_envs,
                                     policy=PolicyConfig(**setting), seed=args.seed, device=args.device)
        score = f"{report['normalized_score_mean']:.1f} +/- {report['normalized_score_std']:.1f}"
        rows.append((json.dumps(setting), score, f"{report['length_mean']:.1f}", f"{report['env_steps_per_s']:.0f}"))
        records.append({"setting": setting, **{k: report[k] for k in (
            "normalized_score_mean", "normalized_score_std", "length_mean", "env_steps_per_s", "precision", "plan")}})
        print(" | ".join(rows[-1]), flush=True)
    print_header(info, command)
    print_table(["setting", "normalised score", "mean length", "env steps/s"], rows, align="lrrr")
    write_json(args.json, {"machine": info, "command": command, "checkpoint": str(checkpoint.path),
                           "results": records})


if __name__ == "__main__":
    main()

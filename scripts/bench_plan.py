"""One checkpoint as a policy in several modes or plan settings, one after another: score and speed.

Each setting is a JSON object of PolicyConfig fields ({"mode": "rcbc"}, {"mode": "plan",
"plan_horizon": 2}, ...), evaluated by `mtm.evaluation.evaluate_checkpoint` exactly as `mtm eval`
does: the final checkpoint, --episodes episodes in --num-envs envs, reset seeds --seed ..., one
torch thread. Prints the normalised score (mean +/- std over episodes), the mean episode length and
the env steps/s of each setting (the figures of BENCHMARKS.md, "Beyond the data"). For plan settings
it also prints, as medians over the env steps, how far the planner's scores spread, in return-token
stds: `best-rcbc`, the best candidate's score above candidate 0's (the RCBC action itself); `spread`,
the std over the candidates; and `top weight`, the softmax weight of the best candidate (1: the
planner follows one candidate; 1/K: it averages them all).

--critic-from CHECKPOINT: plan with another checkpoint's critic (e.g. an mlp-iql run's, trained
longer) in place of the model's own, to tell the critic's share of a result from the rest.

Usage:
  python scripts/bench_plan.py runs/hopper --episodes 20 '{"mode": "rcbc"}' '{"mode": "plan"}'
  python scripts/bench_plan.py runs/hopper --critic-from runs/hopper-iql '{"mode": "plan"}'
"""

from __future__ import annotations

# First: bench_common makes OpenMP wait passively, which must happen before torch loads.
from bench_common import command_line, machine_info, parser_for, print_header, print_table, write_json

import json
from pathlib import Path

import torch

import mtm.evaluation.rollouts as rollouts
from mtm.checkpoint import load_checkpoint
from mtm.evaluation import evaluate_checkpoint
from mtm.planning import Planner
from mtm.policy import load_model
from mtm.policy_config import PolicyConfig


class ScoreSpread:
    """Records, at every planner call, the spread of its candidates' scores (in return-token stds)."""

    def __init__(self) -> None:
        self.rows: list[torch.Tensor] = []
        self._call = Planner.__call__
        recorder = self

        def call(planner, batch, c, proposal):
            out = recorder._call(planner, batch, c, proposal)
            scores = planner.last_scores / planner.return_scale  # (n, K)
            top_weight = planner.last_weights.amax(1)
            recorder.rows.append(torch.stack([scores.amax(1) - scores[:, 0], scores.std(1), top_weight], 1))
            return out

        Planner.__call__ = call

    def take(self) -> dict | None:
        """Medians over the steps recorded since the last take (None: no planner ran)."""
        if not self.rows:
            return None
        medians = torch.cat(self.rows).median(0).values.tolist()
        self.rows.clear()
        return dict(zip(("best_minus_rcbc", "spread", "top_weight"), medians))


def use_critic_from(path: str) -> None:
    """Every model evaluate_checkpoint loads gets the critic (and its reward scale) of `path`'s model."""
    donor = load_model(load_checkpoint(path))
    if getattr(donor, "critic", None) is None:
        raise SystemExit(f"error: {path} has no critic")

    def load(checkpoint, device="cpu"):
        model = load_model(checkpoint, device)
        if not getattr(model, "has_critic", False):
            raise SystemExit(f"error: {checkpoint.path} has no critic to replace (train it with model.critic=true)")
        model.critic.load_state_dict(donor.critic.state_dict())
        model.reward_scale.copy_(donor.reward_scale)
        return model

    rollouts.load_model = load


def main() -> None:
    parser = parser_for(__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("settings", nargs="+", help="JSON objects of PolicyConfig fields")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--num-envs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the policy's device)")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument("--critic-from", metavar="CHECKPOINT", help="plan with this checkpoint's critic")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.critic_from:
        use_critic_from(args.critic_from)
    spread = ScoreSpread()
    command, info = command_line(), machine_info(args.device)
    checkpoint = load_checkpoint(args.checkpoint)
    rows, records = [], []
    for text in args.settings:
        setting = json.loads(text)
        report = evaluate_checkpoint(checkpoint, episodes=args.episodes, num_envs=args.num_envs,
                                     policy=PolicyConfig(**setting), seed=args.seed, device=args.device)
        score = f"{report['normalized_score_mean']:.1f} +/- {report['normalized_score_std']:.1f}"
        scores = spread.take()
        margins = "-" if scores is None else " / ".join(f"{scores[k]:.3f}" for k in ("best_minus_rcbc", "spread", "top_weight"))
        rows.append((json.dumps(setting), score, f"{report['length_mean']:.1f}", f"{report['env_steps_per_s']:.0f}", margins))
        records.append({"setting": setting, "score_spread": scores, **{k: report[k] for k in (
            "normalized_score_mean", "normalized_score_std", "length_mean", "env_steps_per_s", "precision", "plan")}})
        print(" | ".join(rows[-1]), flush=True)
    print_header(info, command)
    print_table(["setting", "normalised score", "mean length", "env steps/s", "best-rcbc / spread / top weight"],
                rows, align="lrrrr")
    write_json(args.json, {"machine": info, "command": command, "checkpoint": str(checkpoint.path),
                           "critic_from": args.critic_from, "results": records})


if __name__ == "__main__":
    main()

"""Two policies on the same episodes: the paired difference of their scores, and how often each fell.

`mtm eval --output` reports every episode with its reset seed. Two reports made with the same
`--seed` and `--episodes` ran the same starts, so their episodes pair up by seed, and the spread of
the per-episode differences says whether a gap between the two means is more than which episodes
were drawn: a gap within about two standard errors of the paired difference is not. Give the
reports as pairs, A then B (e.g. one per training seed); each pair is printed, then all of them
pooled, with the episodes that ended early (terminated: a fall on Hopper) of each policy.

    python scripts/compare_evals.py --labels rcbc,plan runs/hopper/seed0/eval_rcbc.json runs/hopper/seed0/eval_plan.json runs/hopper/seed1/eval_rcbc.json runs/hopper/seed1/eval_plan.json

The score compared is the normalised one where both reports have it, else the return.
"""

import argparse
import json
import math
import statistics
import sys
from pathlib import Path


def episodes_by_seed(report: dict) -> dict[int, dict]:
    return {int(e["seed"]): e for e in report.get("per_episode", [])}


def paired(a: dict, b: dict) -> dict:
    """The episodes of reports a and b that share a reset seed: means, the paired difference b - a
    (mean and its standard error) and each side's early ends."""
    ea, eb = episodes_by_seed(a), episodes_by_seed(b)
    seeds = sorted(set(ea) & set(eb))
    if not seeds:
        raise ValueError("the two reports share no episode seed: evaluate both with the same --seed and --episodes")
    key = "normalized_score" if all("normalized_score" in e for e in (*ea.values(), *eb.values())) else "return"
    xa = [float(ea[s][key]) for s in seeds]
    xb = [float(eb[s][key]) for s in seeds]
    return {"key": key, "seeds": seeds, "a": xa, "b": xb,
            "a_ended": sum(bool(ea[s].get("terminated")) for s in seeds),
            "b_ended": sum(bool(eb[s].get("terminated")) for s in seeds)}


def summary(a: list[float], b: list[float]) -> dict:
    n = len(a)
    diff = [y - x for x, y in zip(a, b)]
    se = statistics.stdev(diff) / math.sqrt(n) if n > 1 else float("nan")
    return {"n": n, "mean_a": statistics.fmean(a), "mean_b": statistics.fmean(b), "diff": statistics.fmean(diff), "se": se}


def line(name: str, s: dict, ended_a: int, ended_b: int, labels: tuple[str, str]) -> str:
    return (f"{name}: {labels[0]} {s['mean_a']:.1f}, {labels[1]} {s['mean_b']:.1f}, "
            f"{labels[1]} - {labels[0]} {s['diff']:+.2f} ± {s['se']:.2f} (standard error, {s['n']} paired episodes); "
            f"ended early {ended_a} / {ended_b}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path, help="eval reports, in pairs: A1 B1 [A2 B2 ...]")
    parser.add_argument("--labels", default="A,B", help="names of the two policies, comma-separated")
    args = parser.parse_args(argv)
    labels = tuple(args.labels.split(","))
    if len(labels) != 2:
        print("error: --labels takes two names, e.g. --labels rcbc,plan", file=sys.stderr)
        return 2
    if len(args.reports) % 2:
        print(f"error: give the reports in pairs (A then B), got {len(args.reports)}", file=sys.stderr)
        return 2
    pooled_a, pooled_b, ended = [], [], [0, 0]
    for a_path, b_path in zip(args.reports[::2], args.reports[1::2]):
        try:
            p = paired(json.loads(a_path.read_text()), json.loads(b_path.read_text()))
        except (OSError, json.JSONDecodeError, KeyError, ValueError) as e:
            print(f"error: {a_path} / {b_path}: {e}", file=sys.stderr)
            return 2
        pooled_a += p["a"]
        pooled_b += p["b"]
        ended[0] += p["a_ended"]
        ended[1] += p["b_ended"]
        print(line(f"{a_path.parent} ({p['key']})", summary(p["a"], p["b"]), p["a_ended"], p["b_ended"], labels))
    if len(args.reports) > 2:
        print(line("pooled", summary(pooled_a, pooled_b), ended[0], ended[1], labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())

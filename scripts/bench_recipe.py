"""The recipe study of BENCHMARKS.md: one factor of the MTM training recipe at a time, scored by
learning curves (normalised score against training CPU-minutes).

Each run is `mtm train --config small` on one shared dataset (../shared/datasets) with one
variant's `--set` overrides, evaluated in the env during training (train.eval_every, RCBC by
default, the same reset seeds each time). The curve is read from the run's metrics.jsonl: the
eval/normalized_score rows against charts/train_cpu_s (CPU seconds of the training steps alone,
so evaluation does not count) and val/bc_mse (held-out action error). Every finished run is one
record in results/recipe.json; a run whose record exists is skipped (resume by running again).

Usage:
  python scripts/bench_recipe.py --datasets hopper-expert-v5 --variants base,bc_tasks --seeds 1
  python scripts/bench_recipe.py --variant "lr1e-3=train.lr=1e-3" --steps 3000 --jobs 2
  python scripts/bench_recipe.py --table-only
"""

from __future__ import annotations

import bench_common  # first: threads and OpenMP waiting, as under the mtm command

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "results" / "recipe.json"
RUNS = ROOT / "runs" / "bench" / "recipe"
MTM = str(ROOT / ".venv" / "bin" / "mtm") if (ROOT / ".venv" / "bin" / "mtm").exists() else "mtm"

# The `small` config the first three rounds of the study started from (before 2026-11-29 12:40 UTC,
# when small became window 2 without dropout). Their variants are this plus one change, so their
# records keep their meaning; "base" is today's small.
# Every record of the study was evaluated with the policy's action history shown, the default until
# 2026-12-07: the variants pin it (the *_nohist / no_history ones turn it off after it).
HISTORY = ["train.eval_policy.action_history=true", "train.mask.action_history=true"]
SMALL_V1 = ["data.window=4", "model.dropout=0.1", *HISTORY]
POLICY_MASKS = "train.mask.modes={random_autoregressive: 0.4, rcbc: 0.4, bc: 0.2}"

# name -> the --set overrides that make it, on top of the `small` config.
VARIANTS: dict[str, list[str]] = {
    "base": HISTORY,
    "base_v1": SMALL_V1,
    "policy_tasks": SMALL_V1 + [POLICY_MASKS],
    "policy_tasks_nohist": SMALL_V1 + [POLICY_MASKS, "train.mask.action_history=false",
                                       "train.eval_policy.action_history=false"],
    "lr1e-3": SMALL_V1 + ["train.lr=1e-3"],
    "lr2e-4": SMALL_V1 + ["train.lr=2e-4"],
    "no_dropout": SMALL_V1 + ["model.dropout=0"],
    "loss_masked": SMALL_V1 + ["train.loss_on=masked"],
    "action_w4": SMALL_V1 + ["train.loss_weights.actions=4"],
    "no_history": SMALL_V1 + ["train.eval_policy.action_history=false"],
    "window2": SMALL_V1 + ["data.window=2"],
    "nodrop_window2": SMALL_V1 + ["model.dropout=0", "data.window=2"],  # = today's small
    "wide": SMALL_V1 + ["model.width=192"],
    "deep": SMALL_V1 + ["model.encoder_layers=3", "model.decoder_layers=2"],
    "ema999": SMALL_V1 + ["train.ema_decay=0.999"],
    "ema995": SMALL_V1 + ["train.ema_decay=0.995"],
    "batch128": SMALL_V1 + ["train.batch_size=128"],  # run it at twice the steps: the same CPU budget
}


def run_key(dataset: str, variant: str, seed: int, steps: int) -> str:
    return f"{dataset}/{variant}/seed{seed}/steps{steps}"


def load_results() -> dict:
    return bench_common.read_json(RESULTS) or {}


def save_results(results: dict, key: str) -> None:
    """Add one record to the file as it is now, so several studies can run at once and share it."""
    bench_common.save_results(RESULTS, results, (key,))


def curve_of(run_dir: Path) -> dict:
    """Eval score, training CPU seconds and held-out action error by step, from metrics.jsonl."""
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    bc = {r["step"]: r["val/bc_mse"] for r in rows if "val/bc_mse" in r}
    points, cpu = [], 0.0
    for r in rows:  # in step order; an eval row's clock is the last logged one (log_every divides eval_every)
        cpu = r.get("charts/train_cpu_s", cpu)
        if "eval/normalized_score" in r:
            points.append([r["step"], round(cpu, 1), round(r["eval/normalized_score"], 2), bc.get(r["step"])])
    return {"curve": points}  # [step, train CPU s, normalised score, val bc_mse]


def train_one(dataset: str, variant: str, overrides: list[str], seed: int, args) -> dict:
    run_dir = RUNS / dataset / variant / f"seed{seed}-steps{args.steps}"
    cmd = [MTM, "train", "--config", args.config, "--data", str(DATA_DIR / f"{dataset}.hdf5"),
           "--run-dir", str(run_dir), "--overwrite", "--no-progress",
           "--set", f"train.steps={args.steps}", "--set", f"train.seed={seed}",
           "--set", f"train.eval_every={args.eval_every}", "--set", f"train.eval_episodes={args.episodes}",
           "--set", f"train.eval_policy.mode={args.mode}", "--set", f"train.val_every={args.eval_every}",
           "--set", f"train.save_every={args.eval_every}", "--set", "train.keep_last=0", "--set", "train.eval_seed=0"]
    for item in overrides:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    print("$ " + " ".join(repr(c) if " " in c else c for c in cmd), flush=True)
    start = time.time()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{dataset}/{variant}/seed{seed} failed:\n{done.stderr[-2000:]}")
    return {"dataset": dataset, "variant": variant, "overrides": overrides, "seed": seed, "steps": args.steps,
            "mode": args.mode, "episodes": args.episodes, "threads": args.threads,
            "wall_s": round(time.time() - start, 1), **curve_of(run_dir)}


def table(results: dict, steps: int | None) -> str:
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for rec in results.values():
        if steps is None or rec["steps"] == steps:
            groups.setdefault((rec["dataset"], rec["variant"], rec["steps"]), []).append(rec)
    lines = ["| dataset | variant | steps | seeds | score by step (mean over seeds) | final | last 3 | train CPU-min "
             "| val bc_mse |", "|---|---|---:|---:|---|---:|---:|---:|---:|"]
    for (dataset, variant, budget), recs in sorted(groups.items()):
        by_step: dict[int, list[float]] = {}
        for rec in recs:
            for step, _, score, _ in rec["curve"]:
                by_step.setdefault(step, []).append(score)
        curve = ", ".join(f"{s}: {statistics.mean(v):.1f}" for s, v in sorted(by_step.items()))
        finals = [rec["curve"][-1][2] for rec in recs]
        # A deterministic policy in a nearly deterministic env makes one checkpoint's score often one
        # trajectory's fate (Hopper: 20 episodes within a point of each other at half the
        # checkpoints, BENCHMARKS.md); the last three checkpoints say more.
        late = statistics.mean(score for rec in recs for _, _, score, _ in rec["curve"][-3:])
        spread = f" ± {statistics.stdev(finals):.1f}" if len(finals) > 1 else ""
        cpu = statistics.mean(rec["curve"][-1][1] for rec in recs) / 60
        bc = [rec["curve"][-1][3] for rec in recs if rec["curve"][-1][3] is not None]
        bc_text = f"{statistics.mean(bc):.4f}" if bc else "–"
        lines.append(f"| {dataset} | {variant} | {budget} | {len(recs)} | {curve} | {statistics.mean(finals):.1f}{spread} "
                     f"| {late:.1f} | {cpu:.1f} | {bc_text} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="hopper-expert-v5,halfcheetah-expert-v5")
    p.add_argument("--variants", default="base", help=f"comma-separated names from {list(VARIANTS)}")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE;KEY=VALUE",
                   help="an ad-hoc variant (repeatable)")
    p.add_argument("--config", default="small")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--mode", default="rcbc", choices=["bc", "rcbc"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=1, help="runs at the same time (each with --threads)")
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args()

    variants = {name: VARIANTS[name] for name in filter(None, args.variants.split(","))}
    for item in args.variant:
        name, _, sets = item.partition("=")
        variants[name] = [s for s in sets.split(";") if s]
    results = load_results()
    if not args.table_only:
        if not DATA_DIR.is_dir():
            sys.exit(f"no shared datasets at {DATA_DIR}")
        todo = [(d, v, s) for s in range(args.seeds) for v in variants for d in args.datasets.split(",")
                if run_key(d, v, s, args.steps) not in results]  # every variant's first seed first

        def work(job):
            dataset, variant, seed = job
            rec = train_one(dataset, variant, variants[variant], seed, args)
            key = run_key(dataset, variant, seed, args.steps)
            results[key] = rec
            save_results(results, key)
            print(f"{dataset} {variant} seed{seed}: {rec['curve']}", flush=True)

        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(work, todo))
    print(table(load_results(), None if args.table_only else args.steps))


if __name__ == "__main__":
    main()

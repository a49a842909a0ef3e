"""The quality tables, learning curves and time-to-quality of BENCHMARKS.md.

For each shared dataset (../shared/datasets: Hopper-v5 and HalfCheetah-v5 x medium-replay, medium,
expert) and each training seed, this trains

    mtm       the `small` MTM config, evaluated as a BC policy and as an RCBC policy, plus its
              forward / inverse dynamics errors on held-out episodes (`mtm eval --task`)
    mlp-bc    the `mlp-bc` config (action from the current state), evaluated in BC mode
    mlp-rcbc  the `mlp-rcbc` config (action from state and return-to-go), evaluated in RCBC mode

each with its config's own number of steps (or --steps for all), saving a checkpoint at --points
evenly spaced steps. Every checkpoint is evaluated for E episodes (reset seeds 0..E-1, the same for
every model): that is the learning curve, against training step and against training CPU-seconds
(charts/train_cpu_s in the run's metrics.jsonl: user + system time of the training steps alone).
The tables report the **final** checkpoint; time-to-quality is the training CPU-minutes a method
needs to reach 90 % of the best final score on that dataset (mean over seeds at each checkpoint).

Everything goes through the CLI (`mtm train`, `mtm eval`, `mtm inspect`); every command is
printed and stored. Results: one file, results/quality.json, a record per (recipe tag, dataset,
method, seed); a record or an evaluation that exists is skipped (resume by running the same
command; training resumes its run directory). Run directories: runs/bench/quality/ (git-ignored).
At the end the block between <!-- quality:TAG:begin --> and <!-- quality:TAG:end --> in
BENCHMARKS.md and the plot docs/images/quality_TAG.png (needs matplotlib: pip install -e .[bench])
are regenerated.

Usage:
  python scripts/bench_quality.py                          # 3 seeds, all datasets, all methods
  python scripts/bench_quality.py --datasets hopper-expert-v5 --methods mtm --seeds 1
  python scripts/bench_quality.py --table-only --tag recipe-v1
  # a candidate recipe, on the MTM runs only (its own tag; the MLP rows are the shipped table's):
  python scripts/bench_quality.py --tag v3-dropout --methods mtm --set model.dropout=0.1 --datasets hopper-medium-replay-v5
  # one command per core, on different datasets (they share results/quality.json under a lock):
  python scripts/bench_quality.py --datasets hopper-medium-replay-v5,halfcheetah-medium-replay-v5 &
  python scripts/bench_quality.py --datasets hopper-medium-v5,halfcheetah-medium-v5,hopper-expert-v5,halfcheetah-expert-v5
"""

from __future__ import annotations

import bench_common  # noqa: F401  (first: threads and OpenMP waiting, as under the mtm command)

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import yaml

from mtm.checkpoint import step_dir
from mtm.hardware import PRECISIONS


ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "results" / "quality.json"
RUNS = ROOT / "runs" / "bench" / "quality"
BENCHMARKS = ROOT / "BENCHMARKS.md"
IMAGES = ROOT / "docs" / "images"
MTM = ".venv/bin/mtm" if (ROOT / ".venv" / "bin" / "mtm").exists() else "mtm"  # commands run in ROOT
TAG = "recipe-v2"  # the shipped recipe these runs measure; bump it when configs/small.yaml changes

DATASETS = ["hopper-medium-replay-v5", "halfcheetah-medium-replay-v5", "hopper-medium-v5",
            "halfcheetah-medium-v5", "hopper-expert-v5", "halfcheetah-expert-v5"]
METHODS = {"mtm": "small", "mlp-bc": "mlp-bc", "mlp-rcbc": "mlp-rcbc"}
EVAL_MODES = {"mtm": ["bc", "rcbc"], "mlp-bc": ["bc"], "mlp-rcbc": ["rcbc"]}
COLUMNS = [("mtm", "bc", "MTM (BC)"), ("mtm", "rcbc", "MTM (RCBC)"), ("mlp-bc", "bc", "MLP-BC"),
           ("mlp-rcbc", "rcbc", "MLP-RCBC")]
QUALITY_FRACTION = 0.9  # time-to-quality: CPU-minutes to reach this share of the best final score


def load_results() -> dict:
    results = bench_common.read_json(RESULTS) or {}
    results.setdefault("datasets", {})
    results.setdefault("runs", {})
    return results


def save_results(results: dict, key: str | None = None) -> None:
    """Write the run record `key` (and the dataset entries) into the file as it is now, so that
    several commands (e.g. one per core, on different datasets) can share it."""
    keys = [("datasets", ds) for ds in results["datasets"]] + ([("runs", key)] if key is not None else [])
    bench_common.save_results(RESULTS, results, *keys)


def run(cmd: list[str], env_prefix: dict[str, str], dry_run: bool) -> tuple[int, str, dict]:
    """Print and run one command in ROOT; its exit code, stdout and timing (CPU = this child only)."""
    return bench_common.run_command(cmd, env_prefix, ROOT, capture=True, dry_run=dry_run)


def dataset_entry(ds: str, results: dict, dry_run: bool) -> None:
    if ds in results["datasets"]:
        return
    rc, out, _ = run([MTM, "inspect", "--json", str(DATA_DIR / f"{ds}.hdf5")], {}, dry_run)
    if rc == 0 and not dry_run:
        info = json.loads(out)
        lo, hi = info["reference_scores"]["min"], info["reference_scores"]["max"]
        results["datasets"][ds] = {
            "episodes": info["num_episodes"], "return_mean": info["returns"]["mean"],
            "return_max": info["returns"]["max"], "normalized_mean": info["normalized_return_mean"],
            "normalized_best_episode": 100 * (info["returns"]["max"] - lo) / (hi - lo)}


def train_clocks(run_dir: Path) -> dict[int, float]:
    """Training CPU-seconds at each logged step (charts/train_cpu_s of metrics.jsonl)."""
    clocks = {}
    for line in open(run_dir / "metrics.jsonl"):
        row = json.loads(line)
        if "charts/train_cpu_s" in row:
            clocks[row["step"]] = row["charts/train_cpu_s"]
    return clocks


def val_errors(run_dir: Path) -> dict[int, float]:
    return {row["step"]: row["val/bc_mse"] for row in map(json.loads, open(run_dir / "metrics.jsonl"))
            if "val/bc_mse" in row}


def do_run(ds: str, method: str, seed: int, args, results: dict, env_prefix: dict[str, str]) -> None:
    key = f"{args.tag}/{ds}/{method}/seed{seed}"
    rec = results["runs"].get(key)
    run_dir = RUNS / args.tag / ds / method / f"seed{seed}"
    if rec is None or "train" not in rec:
        if (run_dir / "checkpoints" / "last").exists():
            cmd = [MTM, "train", "--resume", str(run_dir.relative_to(ROOT)), "--no-progress"]
        else:
            steps = args.steps or None
            cmd = [MTM, "train", "--config", METHODS[method], "--data", str(DATA_DIR / f"{ds}.hdf5"),
                   "--run-dir", str(run_dir.relative_to(ROOT)), "--set", f"train.seed={seed}",
                   "--set", "train.device=cpu", "--set", "train.keep_last=0", "--no-progress"]
            cmd += ["--set", f"train.steps={steps}"] if steps else []
            cmd += ["--set", f"train.precision={args.precision}"] if args.precision else []
            cmd += ["--set", f"train.save_every={checkpoint_every(method, args)}",
                    "--set", f"train.val_every={checkpoint_every(method, args)}"]
            cmd += [a for o in args.overrides for a in ("--set", o)] if method == "mtm" else []
            cmd += ["--overwrite"] if run_dir.exists() else []
        rc, _, timing = run(cmd, env_prefix, args.dry_run)
        if rc != 0 or args.dry_run:
            return
        rec = {"dataset": ds, "method": method, "seed": seed, "config": METHODS[method],
               "threads": args.threads, "train": timing, "points": {}}
        if method == "mtm" and args.overrides:
            rec["overrides"] = args.overrides
        results["runs"][key] = rec
        save_results(results, key)
    clocks, bc_mse = train_clocks(run_dir), val_errors(run_dir)
    steps = sorted(int(p.name[5:]) for p in (run_dir / "checkpoints").glob("step_*"))
    for step in steps:
        point = rec["points"].setdefault(str(step), {"train_cpu_s": clocks.get(step), "val_bc_mse": bc_mse.get(step)})
        for mode in EVAL_MODES[method]:
            if mode in point:
                continue
            report = run_dir / f"eval_{mode}_{step}.json"
            cmd = [MTM, "eval", "--checkpoint", str(step_dir(run_dir, step).relative_to(ROOT)),
                   "--episodes", str(args.episodes), "--num-envs", str(args.num_envs), "--seed", "0", "--mode", mode,
                   "--device", "cpu", "--no-progress", "--output", str(report.relative_to(ROOT)), "--overwrite"]
            # The table's cells were evaluated with the action history shown, the default until
            # 2026-12-07: later cells too, so that they compare (an MLP has no history to show).
            cmd.append("--action-history")
            rc, _, timing = run(cmd, env_prefix, args.dry_run)
            if rc == 0 and not args.dry_run:
                r = json.loads(report.read_text())
                point[mode] = {"score": r["normalized_score_mean"], "score_std": r["normalized_score_std"],
                               "return": r["return_mean"], "return_std": r["return_std"],
                               "length": r["length_mean"], "target": r.get("target_return"),
                               "episodes": r["episodes"], "eval_wall_s": timing["wall_s"]}
                save_results(results, key)
    if method == "mtm" and "predict" not in rec and steps:
        out = run_dir / "predict.json"
        cmd = [MTM, "eval", "--checkpoint", str(run_dir.relative_to(ROOT)), "--task", "fd", "--task", "id",
               "--device", "cpu", "--no-progress", "--output", str(out.relative_to(ROOT)), "--overwrite"]
        rc, _, _ = run(cmd, env_prefix, args.dry_run)
        if rc == 0 and not args.dry_run:
            p = json.loads(out.read_text())
            rec["predict"] = {"val_episodes": p["val_episodes"], "windows": p["windows"],
                              **{t: {k: p["tasks"][t][k] for k in ("mse", "baseline_mse", "ratio")} for t in ("fd", "id")}}
            save_results(results, key)


def checkpoint_every(method: str, args) -> int:
    """Steps between the curve's checkpoints: --points of them, on a multiple of the configs' log_every (50)."""
    steps = args.steps or config_steps(METHODS[method])
    return max(50, round(steps / args.points / 50) * 50)


def config_steps(name: str) -> int:
    return yaml.safe_load((ROOT / "mtm" / "configs" / f"{name}.yaml").read_text())["train"]["steps"]


# ------------------------------------------------------------------------------------- tables


def curves(results: dict, tag: str) -> dict:
    """{(dataset, method, mode): {step: ([scores], [cpu seconds])}} over the seeds of one tag."""
    out: dict = {}
    for rec in runs_of(results, tag):
        for step, point in rec["points"].items():
            for mode in EVAL_MODES[rec["method"]]:
                if mode in point and point.get("train_cpu_s") is not None:
                    cell = out.setdefault((rec["dataset"], rec["method"], mode), {}).setdefault(int(step), ([], []))
                    cell[0].append(point[mode]["score"])
                    cell[1].append(point["train_cpu_s"])
    return out


def runs_of(results: dict, tag: str) -> list[dict]:
    return [rec for key, rec in sorted(results["runs"].items()) if key.startswith(tag + "/")]


def final_point(rec: dict) -> dict:
    return rec["points"][str(max(map(int, rec["points"])))] if rec["points"] else {}


def time_to_quality(curve: dict, target: float) -> str:
    """Training CPU-minutes of the first checkpoint whose mean over seeds reaches target."""
    for step in sorted(curve):
        scores, cpu = curve[step]
        if statistics.mean(scores) >= target:
            return f"{statistics.mean(cpu) / 60:.1f} (step {step})"
    return "not reached"


def render(results: dict, tag: str, datasets: list[str]) -> str:
    runs = runs_of(results, tag)
    cur = curves(results, tag)
    L = [f"<!-- quality:{tag}:begin -->", "",
         f"Generated by `scripts/bench_quality.py` from `results/quality.json` (tag `{tag}`) — do not edit by hand "
         f"(`python scripts/bench_quality.py --table-only --tag {tag}` rebuilds it).", ""]
    if not runs:
        return "\n".join(L + ["No runs recorded yet.", "", f"<!-- quality:{tag}:end -->"])
    steps = sorted({max(map(int, r["points"])) for r in runs if r["points"]})
    seeds = sorted({r["seed"] for r in runs})
    threads = sorted({r.get("threads") for r in runs if r.get("threads")})
    episodes = sorted({p[m]["episodes"] for r in runs for p in r["points"].values() for m in ("bc", "rcbc") if m in p})
    dates = sorted(r["train"]["started"] for r in runs if r.get("train", {}).get("started"))
    mtm_cpu = [final_point(r).get("train_cpu_s") for r in runs if r["method"] == "mtm" and final_point(r).get("train_cpu_s")]
    L.append(f"- **runs**: seeds {', '.join(map(str, seeds))}; final checkpoint at step {' / '.join(map(str, steps))} "
             f"(each method's config, see `mtm/configs/`); OMP_NUM_THREADS={' or '.join(map(str, threads))}, "
             f"CPU, no GPU; {dates[0][:10] if dates else '?'}")
    L.append(f"- **evaluation**: {' / '.join(map(str, episodes))} episodes per checkpoint, reset seeds from 0 (the same "
             "for every model); RCBC with `mtm eval`'s default target; normalised score = 100·(R − random) / "
             "(expert − random), the shared data's own references — **not comparable to D4RL tables**")
    if mtm_cpu:
        L.append(f"- **one MTM model**: {statistics.mean(mtm_cpu) / 60:.1f} training CPU-minutes on average "
                 f"(max {max(mtm_cpu) / 60:.1f})")
    L.append("")
    L.append(f"Final checkpoint, normalised score, mean ± std over seeds ({len(seeds)} unless a cell says fewer). "
             "\"data mean\" / \"data best\" = the dataset's mean / best episode, normalised the same way.")
    L.append("")
    L.append("| dataset | data mean | data best | " + " | ".join(c[2] for c in COLUMNS) + " |")
    L.append("|---|---:|---:|" + "---:|" * len(COLUMNS))
    for ds in datasets:
        info = results["datasets"].get(ds)
        cells = []
        for method, mode, _ in COLUMNS:
            finals = [final_point(r)[mode]["score"] for r in runs
                      if r["dataset"] == ds and r["method"] == method and mode in final_point(r)]
            cells.append(bench_common.mean_std(finals, seeds=len(seeds)) if finals else "–")
        if info is None and all(c == "–" for c in cells):
            continue
        data = f"{info['normalized_mean']:.1f} | {info['normalized_best_episode']:.1f}" if info else "– | –"
        L.append(f"| {ds} | {data} | " + " | ".join(cells) + " |")
    if any(len(c) > 1 for c in cur.values()):
        L += ["", f"**Time-to-quality**: training CPU-minutes until the mean over seeds first reaches "
              f"{QUALITY_FRACTION:.0%} of the best final score on that dataset (best of the columns above; "
              "checkpoints are evenly spaced, so this is an upper bound to within one spacing).", "",
              "| dataset | 90 % of best | " + " | ".join(c[2] for c in COLUMNS) + " |",
              "|---|---:|" + "---:|" * len(COLUMNS)]
        for ds in datasets:
            finals = [statistics.mean(cur[(ds, m, mode)][max(cur[(ds, m, mode)])][0]) for m, mode, _ in COLUMNS
                      if (ds, m, mode) in cur]
            if not finals:
                continue
            target = QUALITY_FRACTION * max(finals)
            cells = [time_to_quality(cur[(ds, m, mode)], target) if (ds, m, mode) in cur else "–" for m, mode, _ in COLUMNS]
            L.append(f"| {ds} | {target:.1f} | " + " | ".join(cells) + " |")
        L += ["", f"![learning curves](docs/images/quality_{tag}.png)"]
    predict = [r for r in runs if r.get("predict")]
    if predict:
        L += ["", "Prediction errors of the final MTM checkpoints on held-out episodes (`mtm eval --task fd --task id`; "
              "ratio = MSE / MSE of predicting the training mean):", "",
              "| dataset | seed | held-out episodes / windows | FD MSE | FD ratio | ID MSE | ID ratio |",
              "|---|---:|---:|---:|---:|---:|---:|"]
        for r in predict:
            p = r["predict"]
            L.append(f"| {r['dataset']} | {r['seed']} | {p['val_episodes']} / {p['windows']} | {p['fd']['mse']:.4f} | "
                     f"{p['fd']['ratio']:.3f} | {p['id']['mse']:.4f} | {p['id']['ratio']:.3f} |")
    L += ["", "<details><summary>Per run (final checkpoint; raw return mean ± std over episodes)</summary>", "",
          "| dataset | method | mode | seed | return | normalised | mean length | RCBC target | train CPU s | threads |",
          "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        fp = final_point(r)
        for mode in EVAL_MODES[r["method"]]:
            if mode in fp:
                e = fp[mode]
                target = f"{e['target']:.0f}" if e.get("target") is not None else "–"
                cpu = fp.get("train_cpu_s") or r["train"].get("cpu_s")
                L.append(f"| {r['dataset']} | {r['method']} | {mode} | {r['seed']} | {e['return']:.1f} ± {e['return_std']:.1f} "
                         f"| {e['score']:.1f} | {e['length']:.0f} | {target} | {cpu:.0f} | {r.get('threads') or '–'} |")
    L += ["", "</details>", "", f"<!-- quality:{tag}:end -->"]
    return "\n".join(L)


def plot(results: dict, tag: str, datasets: list[str]) -> Path | None:
    """One panel per dataset: score against training CPU-minutes, mean ± std over seeds."""
    cur = curves(results, tag)
    shown = [ds for ds in datasets if any((ds, m, mode) in cur for m, mode, _ in COLUMNS)]
    if not shown or not any(len(c) > 1 for c in cur.values()):
        return None
    plt = bench_common.pyplot()
    if plt is None:
        return None

    cols = min(3, len(shown))
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, ds in zip(axes.flat, shown):
        for method, mode, label in COLUMNS:
            curve = cur.get((ds, method, mode))
            if not curve:
                continue
            steps = sorted(curve)
            x = [statistics.mean(curve[s][1]) / 60 for s in steps]
            y = [statistics.mean(curve[s][0]) for s in steps]
            sd = [statistics.stdev(curve[s][0]) if len(curve[s][0]) > 1 else 0.0 for s in steps]
            line, = ax.plot(x, y, marker="o", markersize=3, label=label)
            ax.fill_between(x, [a - b for a, b in zip(y, sd)], [a + b for a, b in zip(y, sd)],
                            color=line.get_color(), alpha=0.15)
        info = results["datasets"].get(ds)
        if info:
            ax.axhline(info["normalized_best_episode"], color="grey", linestyle=":", linewidth=1, label="best episode in data")
        ax.set_title(ds, fontsize=10)
        ax.set_xscale("log")  # MLPs train in seconds, MTM in minutes: both stay readable
        ax.set_xlabel("training CPU-minutes (log scale)")
        ax.set_ylabel("normalised score")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / f"quality_{tag}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_block(results: dict, tag: str, datasets: list[str]) -> None:
    block = render(results, tag, datasets)
    begin, end = f"<!-- quality:{tag}:begin -->", f"<!-- quality:{tag}:end -->"
    if bench_common.replace_block(BENCHMARKS, begin, end, block):
        print(f"tables for {tag} written to BENCHMARKS.md")
    else:
        print(f"BENCHMARKS.md has no {begin} ... {end} markers; the block is:\n\n{block}")
    path = plot(results, tag, datasets)
    if path:
        print(f"plot written to {path.relative_to(ROOT)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated, in run order")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated: mtm, mlp-bc, mlp-rcbc")
    p.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1 (default 3)")
    p.add_argument("--seed-order", default=None, metavar="LIST",
                   help="the training seeds in this order instead, e.g. 1,2,0 (seed 0 last when a study ran it already)")
    p.add_argument("--steps", type=int, default=0, help="training steps of every method (default: each config's own)")
    p.add_argument("--points", type=int, default=6, help="checkpoints on each learning curve (default 6)")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes, seeds 0..E-1 (default 20)")
    p.add_argument("--num-envs", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for every command (default 1)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="train.precision of every run (default: the configs' own, auto)")
    p.add_argument("--tag", default=TAG, help=f"the recipe these runs measure (default {TAG})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="an override of the MTM runs' `small` config (repeatable): a candidate recipe, "
                        "measured like the shipped one; needs its own --tag")
    p.add_argument("--stop-at", default=None, metavar="HH:MM", help="launch no new run after this UTC time today")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--table-only", action="store_true", help="rebuild the block and plot from results/quality.json")
    args = p.parse_args()
    datasets = [d for d in args.datasets.split(",") if d]
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS] + [d for d in datasets if d not in DATASETS]
    if bad:
        print(f"error: unknown dataset/method {bad}; datasets {DATASETS}, methods {list(METHODS)}")
        return 1
    if args.overrides and args.tag == TAG:
        print(f"error: --set measures a candidate recipe, not {TAG}; give it a --tag of its own (e.g. {TAG}-dropout)")
        return 1
    results = load_results()
    if not args.table_only:
        if not DATA_DIR.exists():
            print(f"skipping: {DATA_DIR} is absent (the shared datasets are for developers only)")
            return 0
        env_prefix = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
                      "OMP_WAIT_POLICY": "PASSIVE"}
        deadline = None
        if args.stop_at:
            hh, mm = map(int, args.stop_at.split(":"))
            deadline = datetime.datetime.now(datetime.timezone.utc).replace(hour=hh, minute=mm, second=0, microsecond=0)
        seeds = [int(x) for x in args.seed_order.split(",")] if args.seed_order else range(args.seeds)
        for seed in seeds:  # seed outermost: a cut-short run still covers every dataset with its first seed
            for ds in datasets:
                dataset_entry(ds, results, args.dry_run)
                for method in methods:
                    if deadline and datetime.datetime.now(datetime.timezone.utc) > deadline:
                        print(f"stopped launching runs at {args.stop_at} UTC")
                        break
                    do_run(ds, method, seed, args, results, env_prefix)
        save_results(results) if not args.dry_run else None
    if not args.dry_run:
        results = load_results()  # with the records other commands added meanwhile
        # The block covers every dataset the tag has records of, not just this command's: several
        # commands share the file, and the last to finish must not drop the others' rows.
        measured = {rec["dataset"] for rec in runs_of(results, args.tag)}
        write_block(results, args.tag, [d for d in DATASETS if d in measured])
        print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs; results in {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

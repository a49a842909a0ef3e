"""The quality and prediction tables of BENCHMARKS.md: train, evaluate, tabulate, resume.

For each shared dataset (../shared/datasets: Hopper-v5 and HalfCheetah-v5 x medium-replay, medium,
expert) and each training seed, this trains

    mtm       the `small` MTM config (one model), evaluated as a BC policy and as an RCBC policy,
              plus its forward / inverse dynamics errors on held-out episodes (`mtm eval --task`)
    mlp-bc    the `mlp-bc` config (action from the current state), evaluated in BC mode
    mlp-rcbc  the `mlp-rcbc` config (action from state and return-to-go), evaluated in RCBC mode

all with the same number of steps, and evaluates the **final** checkpoint for E episodes (reset
seeds 0..E-1, the same for every run). RCBC evaluation uses `mtm eval`'s defaults: the target is
the best return of the training split (target fraction p = 1.0), held constant (official MTM).

Everything goes through the CLI (`mtm train`, `mtm eval`, `mtm inspect`); the exact command of
every step is printed and stored. Layout:

    runs/bench/quality/<dataset>/<method>/seed<k>/      run directories (git-ignored)
    results/quality/<dataset>/dataset.json              `mtm inspect --json` of the dataset
    results/quality/<dataset>/<method>/seed<k>/
        train.time.json                                 command, wall and CPU seconds, exit code
        eval_bc.json / eval_rcbc.json (+ .time.json)    `mtm eval --output` reports
        predict.json (+ .time.json)                     `mtm eval --task fd --task id` (mtm only)
    results/quality/summary.json                        every cell of the tables, total CPU time

A step whose output exists is skipped (resume by running the same command again). Training
resumes an interrupted run directory with `mtm train --resume`. At the end the tables between
<!-- quality:begin --> and <!-- quality:end --> in BENCHMARKS.md are regenerated from results/.

Usage:
  python scripts/bench_quality.py                          # 3 seeds, all datasets, all methods
  python scripts/bench_quality.py --seeds 1 --stop-after-min 60
  python scripts/bench_quality.py --datasets hopper-medium-replay-v5 --methods mtm --dry-run
  python scripts/bench_quality.py --table-only             # rebuild the tables from results/
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mtm.hardware import PRECISIONS

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "results" / "quality"
RUNS = ROOT / "runs" / "bench" / "quality"
BENCHMARKS = ROOT / "BENCHMARKS.md"
MTM = ".venv/bin/mtm" if (ROOT / ".venv" / "bin" / "mtm").exists() else "mtm"  # commands run in ROOT
BEGIN, END = "<!-- quality:begin -->", "<!-- quality:end -->"

# Priority order: medium-replay first (the most informative), then medium, then expert.
DATASETS = ["hopper-medium-replay-v5", "halfcheetah-medium-replay-v5", "hopper-medium-v5",
            "halfcheetah-medium-v5", "hopper-expert-v5", "halfcheetah-expert-v5"]
METHODS = {"mtm": "small", "mlp-bc": "mlp-bc", "mlp-rcbc": "mlp-rcbc"}
EVAL_MODES = {"mtm": ["bc", "rcbc"], "mlp-bc": ["bc"], "mlp-rcbc": ["rcbc"]}
COLUMNS = [("mtm", "bc", "MTM (BC)"), ("mtm", "rcbc", "MTM (RCBC)"), ("mlp-bc", "bc", "MLP-BC"),
           ("mlp-rcbc", "rcbc", "MLP-RCBC")]


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return os.path.relpath(path, ROOT)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run_step(cmd: list[str], env_prefix: dict[str, str], time_file: Path | None, dry_run: bool,
             capture: Path | None = None) -> int:
    """Print and run one command; record command, wall and CPU seconds (this child only) in time_file."""
    shown = " ".join([f"{k}={v}" for k, v in env_prefix.items()] + [shlex.join(cmd)])
    print(f"$ {shown}", flush=True)
    if dry_run:
        return 0
    env = dict(os.environ, **env_prefix)
    load = os.getloadavg()[0]
    started = now()
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    if capture is not None:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        rc = proc.returncode
        if rc == 0:
            capture.parent.mkdir(parents=True, exist_ok=True)
            capture.write_text(proc.stdout)
    else:
        rc = subprocess.call(cmd, env=env, cwd=ROOT)
    t1, r1 = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    if time_file is not None:
        time_file.parent.mkdir(parents=True, exist_ok=True)
        time_file.write_text(json.dumps({
            "command": shown, "returncode": rc, "wall_s": round(t1 - t0, 1),
            "cpu_s": round((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), 1),
            "started": started, "finished": now(), "load_avg_1min_at_start": round(load, 2),
        }, indent=1) + "\n")
    if rc != 0:
        print(f"  -> exit code {rc}", flush=True)
    return rc


def final_checkpoint(run_dir: Path, steps: int) -> Path:
    return run_dir / "checkpoints" / f"step_{steps:08d}"


def do_run(ds: str, method: str, seed: int, args, env_prefix: dict[str, str]) -> None:
    data = DATA_DIR / f"{ds}.hdf5"
    run_dir = RUNS / ds / method / f"seed{seed}"
    out = RESULTS / ds / method / f"seed{seed}"
    ckpt = final_checkpoint(run_dir, args.steps)
    wanted = [out / f"eval_{m}.json" for m in EVAL_MODES[method]] + ([out / "predict.json"] if method == "mtm" else [])
    if all(w.exists() for w in wanted):
        print(f"= {ds} {method} seed{seed}: done ({rel(out)})", flush=True)
        return
    if not ckpt.exists():
        if (run_dir / "checkpoints" / "last").exists():
            cmd = [MTM, "train", "--resume", rel(run_dir), "--set", f"train.steps={args.steps}", "--no-progress"]
        else:
            cmd = [MTM, "train", "--config", METHODS[method], "--data", rel(data), "--run-dir", rel(run_dir),
                   "--set", f"train.seed={seed}", "--set", f"train.steps={args.steps}",
                   "--set", f"train.precision={args.precision}", "--set", "train.device=cpu",
                   "--no-progress"]
            if run_dir.exists():
                cmd.append("--overwrite")
        if run_step(cmd, env_prefix, out / "train.time.json", args.dry_run) != 0:
            return
    for mode in EVAL_MODES[method]:
        report = out / f"eval_{mode}.json"
        if report.exists():
            continue
        cmd = [MTM, "eval", "--checkpoint", rel(ckpt), "--episodes", str(args.episodes), "--num-envs",
               str(args.num_envs), "--seed", "0", "--mode", mode, "--device", "cpu", "--no-progress",
               "--output", rel(report)]
        run_step(cmd, env_prefix, out / f"eval_{mode}.time.json", args.dry_run)
    if method == "mtm" and not (out / "predict.json").exists():
        cmd = [MTM, "eval", "--checkpoint", rel(ckpt), "--task", "fd", "--task", "id", "--device", "cpu",
               "--no-progress", "--output", rel(out / "predict.json")]
        run_step(cmd, env_prefix, out / "predict.time.json", args.dry_run)


def dataset_info(ds: str, dry_run: bool) -> None:
    path = RESULTS / ds / "dataset.json"
    if path.exists():
        return
    run_step([MTM, "inspect", "--json", rel(DATA_DIR / f"{ds}.hdf5")], {}, None, dry_run, capture=path)


# ----------------------------------------------------------------------------------------- tables

def load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def threads_of(command: str) -> int | None:
    """OMP_NUM_THREADS of a recorded command line (runs of one table may differ: --threads)."""
    match = re.search(r"\bOMP_NUM_THREADS=(\d+)", command)
    return int(match.group(1)) if match else None


def fmt_seeds(values: list[float], episode_std: list[float]) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.1f} ± {episode_std[0]:.1f} ep"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} ({len(values)} seeds)"


def collect(datasets: list[str], seeds: list[int]) -> dict:
    """Every cell of the tables, from results/ only."""
    cells, runs, total_cpu, total_wall = {}, [], 0.0, 0.0
    for tf in sorted(RESULTS.glob("*/*/seed*/*.time.json")):
        t = load(tf)
        if t:
            total_cpu += t.get("cpu_s", 0.0)
            total_wall += t.get("wall_s", 0.0)
    for ds in datasets:
        info = load(RESULTS / ds / "dataset.json")
        row = {"behaviour_normalized": info.get("normalized_return_mean") if info else None,
               "behaviour_return": (info or {}).get("returns", {}).get("mean"),
               "present": (DATA_DIR / f"{ds}.hdf5").exists(), "cols": {}, "predict": []}
        for method, mode, label in COLUMNS:
            vals, eps_std, failed = [], [], False
            for seed in seeds:
                out = RESULTS / ds / method / f"seed{seed}"
                rep = load(out / f"eval_{mode}.json")
                tt = load(out / "train.time.json") or {}
                et = load(out / f"eval_{mode}.time.json") or {}
                if tt.get("returncode", 0) != 0 or et.get("returncode", 0) != 0:
                    failed = True
                if rep and rep.get("normalized_score_mean") is not None:
                    vals.append(rep["normalized_score_mean"])
                    eps_std.append(rep["normalized_score_std"])
                    runs.append({"dataset": ds, "method": method, "mode": mode, "seed": seed,
                                 "return_mean": rep["return_mean"], "return_std": rep["return_std"],
                                 "normalized_score_mean": rep["normalized_score_mean"],
                                 "normalized_score_std": rep["normalized_score_std"],
                                 "length_mean": rep["length_mean"], "episodes": rep["episodes"],
                                 "target_return": rep.get("target_return"),
                                 "checkpoint_step": rep.get("checkpoint_step"), "date": rep.get("date"),
                                 "train_wall_s": tt.get("wall_s"), "train_cpu_s": tt.get("cpu_s"),
                                 "train_load_avg": tt.get("load_avg_1min_at_start"),
                                 "threads": threads_of(tt.get("command", "")),
                                 "eval_wall_s": et.get("wall_s"), "eval_cpu_s": et.get("cpu_s")})
            row["cols"][label] = {"values": vals, "episode_std": eps_std, "failed": failed}
        for seed in seeds:
            p = load(RESULTS / ds / "mtm" / f"seed{seed}" / "predict.json")
            if p:
                row["predict"].append({"seed": seed, **{k: p["tasks"][k] for k in ("fd", "id") if k in p["tasks"]},
                                       "val_episodes": p.get("val_episodes"), "windows": p.get("windows")})
        cells[ds] = row
    return {"cells": cells, "runs": runs, "total_cpu_s": round(total_cpu, 1), "total_wall_s": round(total_wall, 1)}


def render(summary: dict, args) -> str:
    cells, runs = summary["cells"], summary["runs"]
    stamps = [load(tf) or {} for tf in RESULTS.glob("*/*/seed*/*.time.json")]
    dates = sorted([t["started"] for t in stamps if t.get("started")] + [t["finished"] for t in stamps if t.get("finished")])
    date = f"{dates[0][:16].replace('T', ' ')}–{dates[-1][11:16]} UTC" if dates else "no run finished"
    seeds_done = sorted({r["seed"] for r in runs})
    ds_by_seed = {k: [ds for ds in cells if any(r["seed"] == k and r["dataset"] == ds for r in runs)]
                  for k in seeds_done}
    base_n = 0  # seeds 0..base_n-1 ran on every dataset that has any result
    while base_n in ds_by_seed and ds_by_seed[base_n] == ds_by_seed.get(0):
        base_n += 1
    seed_text = ", ".join(
        f"{k} on {'every dataset measured' if k < base_n else ', '.join(ds_by_seed[k])}" for k in seeds_done)
    common = f"--steps {args.steps} --episodes {args.episodes}"
    threads_by_seed = {k: sorted({r["threads"] for r in runs if r["seed"] == k and r["threads"]}) for k in seeds_done}

    def threads_flag(seeds: list[int]) -> str:
        used = sorted({t for k in seeds for t in threads_by_seed.get(k, [])})
        return f"--threads {used[0] if len(used) == 1 else args.threads}"

    repro = []
    if base_n:  # one command per thread count used, so each reproduces its runs as they ran
        groups: dict[str, list[int]] = {}
        for k in range(base_n):
            groups.setdefault(threads_flag([k]), []).append(k)
        for flag, ks in groups.items():
            first = "" if ks[0] == 0 else f" (seeds {ks[0]}..{ks[-1]}: the steps of lower seeds exist and are skipped)"
            repro.append(f".venv/bin/python scripts/bench_quality.py --seeds {ks[-1] + 1} {common} {flag}{first}")
    for k in seeds_done:
        if k >= base_n:
            repro.append(f".venv/bin/python scripts/bench_quality.py --datasets {','.join(ds_by_seed[k])} "
                         f"--seeds {k + 1} {common} {threads_flag([k])}")
    used_threads = sorted({r["threads"] for r in runs if r["threads"]})
    mtm_train = [r["train_cpu_s"] for r in runs if r["method"] == "mtm" and r["mode"] == "bc" and r["train_cpu_s"]]
    per_cell_cpu = {}
    for tf in RESULTS.glob("*/*/seed*/*.time.json"):
        t = load(tf) or {}
        key = (tf.parts[-4], tf.parts[-3], tf.parts[-2])
        per_cell_cpu[key] = per_cell_cpu.get(key, 0.0) + t.get("cpu_s", 0.0)
    one_seed_cpu = {}
    for (ds, method, seed), cpu in per_cell_cpu.items():
        one_seed_cpu.setdefault((ds, method), []).append(cpu)
    measured_units = {k: statistics.mean(v) for k, v in one_seed_cpu.items()}
    by_method = {}
    for (ds, method), cpu in measured_units.items():
        by_method.setdefault(method, []).append(cpu)
    est_one_seed = sum(statistics.mean(v) for v in by_method.values()) * len(DATASETS) if by_method else None
    L = []
    L.append(BEGIN)
    L.append("")
    L.append("Generated by `scripts/bench_quality.py` from `results/quality/` — do not edit by hand "
             "(`python scripts/bench_quality.py --table-only` rebuilds it).")
    L.append("")
    L.append(f"- **seeds used**: {seed_text or 'none'} "
             f"(training seeds; one model per seed and method); **final checkpoint** (step {args.steps}), "
             f"never the best one")
    L.append(f"- **budget**: {args.steps} training steps per model, batch 256 (the configs' own), "
             f"{PRECISION_TEXT[args.precision]}, CPU, OMP_NUM_THREADS="
             f"{' or '.join(map(str, used_threads or [args.threads]))} (per run in the table below; "
             f"`OMP_WAIT_POLICY=PASSIVE`; the thread count changes speed, not the result's meaning); MTM = built-in `small` config (0.70 M parameters, L = 4), "
             f"MLPs = `mlp-bc` / `mlp-rcbc` (width 256, 3 layers) at the same steps and batch")
    L.append(f"- **evaluation**: {args.episodes} episodes per model, reset seeds 0–{args.episodes - 1} (the same "
             f"for every model), {args.num_envs} envs stepped together; RCBC target = best return of the "
             f"training split (`--target-fraction` 1.0), held constant; normalised score = 100·(R − random) / "
             f"(expert − random) with the shared data's own references (../shared/datasets/README.md) — "
             f"**not comparable to D4RL tables**")
    L.append(f"- **date**: {date}; **machine**: one of [Machines](#machines-and-kernel-paths) (see the section heading for its CPU path; {platform.machine()}, "
             f"{os.cpu_count()} cores shared with "
             f"other engineers' jobs (load average at each training start in `results/quality/summary.json`), "
             f"no GPU, Python {platform.python_version()})")
    L.append(f"- **CPU time**: {summary['total_cpu_s'] / 60:.1f} CPU-minutes in all "
             f"({summary['total_wall_s'] / 60:.1f} wall-minutes, training + evaluation + prediction errors)"
             + (f"; one MTM training ≈ {statistics.mean(mtm_train) / 60:.1f} CPU-minutes" if mtm_train else ""))
    L.append("- **reproduce** (this table; each command resumes and skips what exists):")
    L.append("")
    L.extend(f"      {c}" for c in repro)
    L.append("")
    est = (f"estimated ≈ {3 * est_one_seed / 3600:.1f} CPU-hours from this run's per-run times"
           if est_one_seed else "time not estimated")
    if est_one_seed and summary["total_cpu_s"]:
        est += (f"; ≈ {3 * est_one_seed * summary['total_wall_s'] / summary['total_cpu_s'] / 3600:.1f} hours of "
                f"wall time at this run's wall/CPU ratio, one command at a time")
    L.append(f"  the full table (3 seeds; {est}):")
    L.append("")
    L.append(f"      .venv/bin/python scripts/bench_quality.py --seeds 3 {common} --threads {args.threads}")
    L.append("")
    L.append("Normalised score: mean over seeds of each model's mean over episodes, ± std over seeds; with one "
             "seed, **`± x ep` is the std over the evaluation episodes of that one model** and says nothing about "
             "seed-to-seed spread. "
             "\"behaviour data\" = the dataset's own mean episode return, normalised the same way "
             "(`mtm inspect --json`, `normalized_return_mean`).")
    L.append("")
    L.append("| dataset | behaviour data | " + " | ".join(c[2] for c in COLUMNS) + " |")
    L.append("|---|---:|" + "---:|" * len(COLUMNS))
    for ds, row in cells.items():
        if not row["present"]:
            L.append(f"| {ds} | " + " | ".join(["not measured (dataset absent)"] * (len(COLUMNS) + 1)) + " |")
            continue
        b = row["behaviour_normalized"]
        cols = []
        for _, _, label in COLUMNS:
            c = row["cols"][label]
            if c["values"]:
                cols.append(fmt_seeds(c["values"], c["episode_std"]))
            elif c["failed"]:
                cols.append("not measured (run failed; see results/)")
            else:
                cols.append("not measured (time)")
        L.append(f"| {ds} | {b:.1f} | " if b is not None else f"| {ds} | not measured | ")
        L[-1] += " | ".join(cols) + " |"
    L.append("")
    L.append("Per run (raw return mean ± std over episodes; times in seconds, CPU = user + system of that "
             "command; load = 1-minute load average when training started):")
    L.append("")
    L.append("| dataset | method | mode | seed | return | normalised | mean length | RCBC target | train wall / CPU | "
             "threads | load | eval wall |")
    L.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        tgt = f"{r['target_return']:.0f}" if r.get("target_return") is not None else "–"
        L.append(f"| {r['dataset']} | {r['method']} | {r['mode']} | {r['seed']} | {r['return_mean']:.1f} ± "
                 f"{r['return_std']:.1f} | {r['normalized_score_mean']:.1f} | {r['length_mean']:.0f} | {tgt} | "
                 f"{r['train_wall_s']} / {r['train_cpu_s']} | {r['threads'] or '–'} | {r['train_load_avg']} | "
                 f"{r['eval_wall_s']} |")
    L.append("")
    L.append("### Prediction errors (MTM, held-out episodes)")
    L.append("")
    L.append("`mtm eval --checkpoint RUN/checkpoints/step_N --task fd --task id`: mean squared error in raw units "
             "on the 10% of episodes held out from training (split seed 0), against the baseline that predicts "
             "the training mean; ratio = MSE / baseline MSE (lower is better, 1 = no better than the mean). "
             "Window L = 4, c = L − 2: FD shows states and actions at steps 0..c and reads the state at c + 1; "
             "ID shows states 0..c + 1 and actions 0..c − 1 and reads the action at c (mtm/evaluation/predictions.py). "
             "Same MTM models as the table above (final checkpoint); every held-out window whose steps are all "
             "real is scored.")
    L.append("")
    L.append("| dataset | seed | held-out episodes / windows | FD MSE | FD baseline | FD ratio | ID MSE | ID baseline | "
             "ID ratio |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for ds, row in cells.items():
        if not row["predict"]:
            why = "dataset absent" if not row["present"] else "time"
            L.append(f"| {ds} | – | – | not measured ({why}) | | | | | |")
        for p in row["predict"]:
            fd, id_ = p.get("fd", {}), p.get("id", {})
            L.append(f"| {ds} | {p['seed']} | {p['val_episodes']} / {p['windows']} | {fd.get('mse', float('nan')):.4f} | "
                     f"{fd.get('baseline_mse', float('nan')):.4f} | {fd.get('ratio', float('nan')):.3f} | "
                     f"{id_.get('mse', float('nan')):.4f} | {id_.get('baseline_mse', float('nan')):.4f} | "
                     f"{id_.get('ratio', float('nan')):.3f} |")
    L.append("")
    L.append(END)
    return "\n".join(L)


PRECISION_TEXT = {"auto": "precision auto (bf16 autocast where the CPU has native bf16, else fp32)",
                  "fp32": "fp32", "bf16": "bf16 autocast"}


def write_tables(datasets: list[str], seeds: list[int], args) -> None:
    # Every seed that has results counts, whatever --seeds says (the table shows all of results/).
    seeds = sorted(set(seeds) | {int(d.name[4:]) for d in RESULTS.glob("*/*/seed*") if d.name[4:].isdigit()})
    for ds in datasets:  # the behaviour column: cheap (`mtm inspect`), so also in --table-only
        if (DATA_DIR / f"{ds}.hdf5").exists():
            dataset_info(ds, False)
    summary = collect(datasets, seeds)
    summary.update({"steps": args.steps, "episodes": args.episodes, "precision": args.precision, "threads": args.threads,
                    "num_envs": args.num_envs, "seeds": seeds, "generated": now(),
                    "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                "python": platform.python_version()}})
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    block = render(summary, args)
    text = BENCHMARKS.read_text()
    if BEGIN not in text or END not in text:
        print(f"BENCHMARKS.md has no {BEGIN} ... {END} markers; the table is:\n\n{block}")
        return
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    BENCHMARKS.write_text(head + block + tail)
    print(f"tables written to {rel(BENCHMARKS)} and {rel(RESULTS / 'summary.json')} "
          f"({summary['total_cpu_s'] / 60:.1f} CPU-minutes recorded in results/)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated, in run order")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated: mtm, mlp-bc, mlp-rcbc")
    p.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1 (default 3)")
    p.add_argument("--steps", type=int, default=3000, help="training steps, every method (default 3000)")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes, seeds 0..E-1 (default 20)")
    p.add_argument("--num-envs", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for every command (default 1)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="train.precision of every run (default auto: bf16 only where the CPU has native bf16)")
    p.add_argument("--fp32", dest="precision", action="store_const", const="fp32", help="same as --precision fp32")
    p.add_argument("--stop-after-min", type=float, default=None,
                   help="launch no new run after this many minutes; then build the tables")
    p.add_argument("--stop-at", default=None, metavar="HH:MM",
                   help="launch no new run after this UTC time of day (today); then build the tables")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--table-only", action="store_true", help="rebuild the tables from results/ only")
    args = p.parse_args()
    datasets = [d for d in args.datasets.split(",") if d]
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS] + [d for d in datasets if d not in DATASETS]
    if bad:
        print(f"error: unknown dataset/method {bad}; datasets {DATASETS}, methods {list(METHODS)}")
        return 1
    seeds = list(range(args.seeds))
    if not args.table_only:
        if not DATA_DIR.exists():
            print(f"skipping: {DATA_DIR} is absent (the shared datasets are for developers only)")
        else:
            env_prefix = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
                          "OMP_WAIT_POLICY": "PASSIVE"}
            t_start = time.monotonic()
            if args.stop_at:
                hh, mm = map(int, args.stop_at.split(":"))
                utc = datetime.datetime.now(datetime.timezone.utc)
                left = (utc.replace(hour=hh, minute=mm, second=0, microsecond=0) - utc).total_seconds() / 60
                args.stop_after_min = left if args.stop_after_min is None else min(args.stop_after_min, left)
                print(f"launching no new run after {args.stop_at} UTC ({left:.1f} min from now)")
            stopped = False
            # Seed outermost: a cut-short run still covers every dataset with seed 0.
            for seed in seeds:
                for ds in datasets:
                    if not (DATA_DIR / f"{ds}.hdf5").exists():
                        print(f"skipping {ds}: {DATA_DIR / (ds + '.hdf5')} is absent")
                        continue
                    dataset_info(ds, args.dry_run)
                    for method in methods:
                        if args.stop_after_min is not None and time.monotonic() - t_start > 60 * args.stop_after_min:
                            stopped = True
                            break
                        do_run(ds, method, seed, args, env_prefix)
                    if stopped:
                        break
                if stopped:
                    print(f"stopped launching runs after {args.stop_after_min:.1f} min; the rest is 'not measured (time)'")
                    break
    if args.dry_run:
        return 0
    write_tables(datasets, seeds, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

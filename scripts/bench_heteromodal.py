"""Heteromodal data (issue #13): learn from a few labelled episodes plus many state-only ones.

For each dataset (hopper-expert-v5, halfcheetah-expert-v5 from ../shared/datasets) and each seed k,
this keeps actions on a small fraction of whole episodes and drops them from the rest
(`mtm convert --drop actions:1-f --seed k`; f = 1 %, or 5 % when 1 % leaves fewer than two
labelled episodes, as it does for these 100-120-episode files), then trains four rows, all with the
same number of steps and training seed k:

    mlp-bc           `mlp-bc` config on the labelled episodes only   (data.only_with=[actions])
    mtm-labelled     `small` MTM on the labelled episodes only       (data.only_with=[actions])
    mtm-mixed        `small` MTM on labelled + state-only episodes   (the partly labelled file; half of
                     every batch from its labelled episodes, data.action_share=0.5)
    mtm-full         `small` MTM on every episode, with actions      (the ceiling)

evaluates every **final** checkpoint for E episodes as a BC policy (`mtm eval --mode bc`, reset
seeds 0..E-1), and, for the MTM rows, the inverse-dynamics error on held-out episodes
(`mtm eval --task id --data FULL`): the partly labelled file has the full file's episodes in the
same order, so the held-out split (data.val_fraction 0.1, split seed 0) is the same episodes for
every row, none of them trained on, all of them with actions.

Everything goes through the CLI; the exact command, exit code, wall and CPU seconds of every step
are kept. Layout:

    runs/bench/heteromodal/<dataset>/seed<k>/data.hdf5      the partly labelled file (git-ignored)
    runs/bench/heteromodal/<dataset>/seed<k>/<row>/         run directory, eval_bc.json, id.json,
                                                            steps.json (commands and times)
    results/heteromodal.json                                one compact file: every number of the table
    BENCHMARKS.md, between <!-- heteromodal:begin --> and <!-- heteromodal:end -->: the table

A step whose output exists is skipped (run the same command again to resume; an interrupted
training continues with `mtm train --resume`).

Usage:
  python scripts/bench_heteromodal.py                                  # 2 datasets x 3 seeds x 4 rows
  python scripts/bench_heteromodal.py --steps 50 --seeds 1 --episodes 2 --work /tmp/h --results /tmp/h.json --no-benchmarks
  python scripts/bench_heteromodal.py --dry-run                        # print the commands
  python scripts/bench_heteromodal.py --table-only                     # rebuild the table from results
"""

from __future__ import annotations

import bench_common  # noqa: F401  (first: threads and OpenMP waiting, as under the mtm command)

import argparse
import datetime
import json
import sys
from pathlib import Path

from bench_common import mean_std, read_json
from mtm.checkpoint import step_dir
from mtm.hardware import PRECISIONS
from mtm.io import atomic_write_text
from mtm.run_metadata import RunMetadata

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT.parent / "shared" / "datasets"
MTM = str(ROOT / ".venv" / "bin" / "mtm") if (ROOT / ".venv" / "bin" / "mtm").exists() else "mtm"
BENCHMARKS = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- heteromodal:begin -->", "<!-- heteromodal:end -->"
DATASETS = ["hopper-expert-v5", "halfcheetah-expert-v5"]
# row -> (config, uses the partly labelled file, only the labelled episodes, label in the table)
ROWS = {
    "mlp-bc": ("mlp-bc", True, True, "MLP-BC, labelled only"),
    "mtm-labelled": ("small", True, True, "MTM, labelled only"),
    "mtm-mixed": ("small", True, False, "MTM, labelled + state-only"),
    "mtm-full": ("small", False, False, "MTM, all with actions (ceiling)"),
}
# The mixed row draws half of every batch from the labelled episodes (5 % of the file): without it
# a batch holds ~13 labelled windows of 256 and the action head sees 20x fewer examples than the
# labelled-only row's at the same steps.
ROW_SETTINGS = {"mtm-mixed": ["data.action_share=0.5"]}
ID_ROWS = ("mtm-labelled", "mtm-mixed", "mtm-full")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def labelled_fraction(episodes: int) -> float:
    """1 % (the paper's setting), or 5 % when 1 % leaves fewer than two labelled episodes."""
    return 0.01 if round(0.01 * episodes) >= 2 else 0.05


class Steps:
    """Runs commands, records each one's command line, exit code, wall and CPU seconds (children)."""

    def __init__(self, record: Path, env: dict[str, str], dry_run: bool) -> None:
        self.record, self.env, self.dry_run = record, env, dry_run
        self.done = (read_json(record) or {}) if not dry_run else {}

    def run(self, name: str, cmd: list[str], capture: Path | None = None) -> bool:
        code, out, timing = bench_common.run_command(cmd, self.env, ROOT, capture=capture is not None,
                                                     dry_run=self.dry_run)
        if self.dry_run:
            return True
        if capture is not None and code == 0:
            capture.parent.mkdir(parents=True, exist_ok=True)
            capture.write_text(out)
        self.done[name] = {**timing, "returncode": code}
        self.record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.record, json.dumps(self.done, indent=1) + "\n")
        return code == 0


def do_seed(ds: str, seed: int, args, env: dict[str, str]) -> None:
    full = DATA_DIR / f"{ds}.hdf5"
    work = args.work / ds / f"seed{seed}"
    steps = Steps(work / "steps.json", env, args.dry_run)
    info = read_json(args.work / ds / "dataset.json") or {"num_episodes": 0}
    fraction = labelled_fraction(info["num_episodes"]) if info["num_episodes"] else 0.05
    partial = work / "data.hdf5"
    if not partial.exists():
        if not args.dry_run:
            work.mkdir(parents=True, exist_ok=True)
        if not steps.run("convert", [MTM, "convert", full, partial, "--drop", f"actions:{1 - fraction:g}",
                                     "--seed", str(seed)]):
            return  # nothing to train on
    for row in args.rows:
        config, uses_partial, labelled_only, _ = ROWS[row]
        run_dir = work / row
        ckpt = step_dir(run_dir, args.steps)
        if not ckpt.exists():
            if (run_dir / "checkpoints" / "last").exists():
                cmd = [MTM, "train", "--resume", run_dir, "--set", f"train.steps={args.steps}", "--no-progress"]
            else:
                cmd = [MTM, "train", "--config", config, "--data", partial if uses_partial else full,
                       "--run-dir", run_dir, "--set", f"train.seed={seed}", "--set", f"train.steps={args.steps}",
                       "--set", "train.device=cpu", "--set", f"train.precision={args.precision}", "--no-progress"]
                if labelled_only:
                    cmd += ["--set", "data.only_with=[actions]"]
                for item in ROW_SETTINGS.get(row, []):
                    cmd += ["--set", item]
                if run_dir.exists():
                    cmd.append("--overwrite")
            if not steps.run(f"{row}/train", cmd):
                continue
        report = run_dir / "eval_bc.json"
        if not report.exists():
            cmd = [MTM, "eval", "--checkpoint", ckpt, "--episodes", str(args.episodes), "--num-envs",
                   str(min(args.num_envs, args.episodes)), "--seed", "0", "--mode", "bc", "--device", "cpu",
                   "--no-progress", "--output", report]
            if args.no_action_history and row != "mlp-bc":
                cmd.append("--no-action-history")
            steps.run(f"{row}/eval_bc", cmd)
        predict = run_dir / "id.json"
        if row in ID_ROWS and not predict.exists():
            steps.run(f"{row}/id", [MTM, "eval", "--checkpoint", ckpt, "--task", "id", "--data", full,
                                    "--device", "cpu", "--no-progress", "--output", predict])


# ----------------------------------------------------------------------------------------- results


def collect(args, seeds: list[int]) -> dict:
    """Every number of the table, from the work folder only: one compact JSON."""
    out = {"generated": now(), "steps": args.steps, "episodes": args.episodes, "precision": args.precision,
           "threads": args.threads, "no_action_history": args.no_action_history, "seeds": seeds,
           "machine": bench_common.machine_info(), "datasets": {}}
    total_cpu = 0.0
    for ds in args.datasets:
        info = read_json(args.work / ds / "dataset.json") or {}
        e = info.get("num_episodes")
        entry = {"episodes": e, "labelled_fraction": labelled_fraction(e) if e else None,
                 "behaviour_normalized": info.get("normalized_return_mean"), "rows": {}}
        for row in ROWS:
            cells = []
            for seed in seeds:
                work = args.work / ds / f"seed{seed}"
                times = read_json(work / "steps.json") or {}
                report, predict = read_json(work / row / "eval_bc.json"), read_json(work / row / "id.json")
                meta = read_json(step_dir(work / row, args.steps) / "metadata.json") or {}
                split = RunMetadata.from_dict(meta).split
                if report is None:
                    continue
                train_t = times.get(f"{row}/train", {})
                cells.append({
                    "seed": seed,
                    "score": report.get("normalized_score_mean"), "score_episode_std": report.get("normalized_score_std"),
                    "return": report.get("return_mean"),
                    "train_episodes": split.get("train_episodes"),
                    "train_episodes_with_actions": split.get("train_episodes_with", {}).get(
                        "actions", split.get("train_episodes")),
                    "id_mse": (predict or {}).get("tasks", {}).get("id", {}).get("mse"),
                    "id_ratio": (predict or {}).get("tasks", {}).get("id", {}).get("ratio"),
                    "id_val_episodes": (predict or {}).get("val_episodes"),
                    "train_cpu_s": train_t.get("cpu_s"), "train_wall_s": train_t.get("wall_s"),
                    "train_command": train_t.get("command"),
                })
            entry["rows"][row] = cells
        for seed in seeds:
            for t in (read_json(args.work / ds / f"seed{seed}" / "steps.json") or {}).values():
                total_cpu += t.get("cpu_s", 0.0)
        out["datasets"][ds] = entry
    out["total_cpu_s"] = round(total_cpu, 1)
    # The seeds that have results, per dataset (a cut-short study has fewer than --seeds asked for).
    out["seeds"] = {ds: sorted({c["seed"] for cells in e["rows"].values() for c in cells})
                    for ds, e in out["datasets"].items()}
    return out


def render(results: dict, command: str) -> str:
    L = [BEGIN, "", "Generated by `scripts/bench_heteromodal.py` from `results/heteromodal.json` — do not edit by "
         "hand (`--table-only` rebuilds it).", ""]
    seeds = "; ".join(f"{ds} {', '.join(map(str, ks)) or 'none'}" for ds, ks in results["seeds"].items())
    L.append(f"- **budget**: {results['steps']} training steps for every row, batch 256 (the configs' own), "
             f"precision {results['precision']}, CPU, OMP_NUM_THREADS={results['threads']}; training seeds "
             f"{seeds}, each with its own labelled subset (`mtm convert --drop` seed = training seed)")
    L.append(f"- **evaluation**: final checkpoint, {results['episodes']} episodes per model (reset seeds 0–"
             f"{results['episodes'] - 1}), BC mode{' without action history' if results['no_action_history'] else ''}; "
             f"normalised score with the shared data's references; ID = inverse-dynamics MSE (raw units) on the "
             f"held-out 10 % of episodes of the full file, the same episodes for every row")
    L.append(f"- **CPU time**: {results['total_cpu_s'] / 60:.1f} CPU-minutes recorded; reproduce: `{command}`")
    L.append("")
    L.append("| dataset | labelled | row | normalised score (mean ± std over seeds) | ID MSE held-out | "
             "labelled training episodes |")
    L.append("|---|---:|---|---:|---:|---:|")
    for ds, entry in results["datasets"].items():
        frac = entry.get("labelled_fraction")
        for row, cells in entry["rows"].items():
            label = ROWS[row][3]
            ids = mean_std([c["id_mse"] for c in cells], 4) if row in ID_ROWS else "–"
            n = sorted({c["train_episodes_with_actions"] for c in cells if c["train_episodes_with_actions"] is not None})
            L.append(f"| {ds} | {f'{frac:.0%}' if frac else '?'} | {label} | {mean_std([c['score'] for c in cells])} | "
                     f"{ids} | {', '.join(map(str, n)) or '–'} |")
    L.append("")
    L.append(END)
    return "\n".join(L)


def write_outputs(args, seeds: list[int], command: str) -> None:
    results = collect(args, seeds)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.results, json.dumps(results, indent=1) + "\n")
    block = render(results, command)
    print(block)
    if args.no_benchmarks:
        return
    if not bench_common.replace_block(BENCHMARKS, BEGIN, END, block):
        print(f"BENCHMARKS.md has no {BEGIN} ... {END} markers; the table is above")
        return
    print(f"table written to BENCHMARKS.md, numbers to {args.results}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated shared datasets")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated: {', '.join(ROWS)}")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (training seed and labelled subset)")
    p.add_argument("--steps", type=int, default=3000, help="training steps, every row (default 3000)")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes (default 20)")
    p.add_argument("--num-envs", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every command (default 1)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--no-action-history", action="store_true",
                   help="evaluate the MTM rows without showing them their past actions (mtm eval --no-action-history)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "heteromodal", help="data and run folders")
    p.add_argument("--results", type=Path, default=ROOT / "results" / "heteromodal.json")
    p.add_argument("--no-benchmarks", action="store_true", help="do not write the table into BENCHMARKS.md")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--table-only", action="store_true", help="rebuild results and table from the work folder")
    args = p.parse_args()
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.rows = [r for r in args.rows.split(",") if r]
    bad = [r for r in args.rows if r not in ROWS]
    if bad:
        print(f"error: unknown row(s) {bad}; choose from {', '.join(ROWS)}", file=sys.stderr)
        return 1
    seeds = list(range(args.seeds))
    command = " ".join([".venv/bin/python scripts/bench_heteromodal.py", f"--seeds {args.seeds}",
                        f"--steps {args.steps}", f"--episodes {args.episodes}", f"--threads {args.threads}"]
                       + (["--no-action-history"] if args.no_action_history else []))
    if not args.table_only:
        env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
               "OMP_WAIT_POLICY": "PASSIVE"}
        for ds in args.datasets:
            if not (DATA_DIR / f"{ds}.hdf5").exists():
                print(f"skipping {ds}: {DATA_DIR / (ds + '.hdf5')} is absent (shared datasets are for developers)")
                continue
            summary = args.work / ds / "dataset.json"
            if not summary.exists():
                Steps(args.work / ds / "steps.json", {}, args.dry_run).run(
                    "inspect", [MTM, "inspect", "--json", DATA_DIR / f"{ds}.hdf5"], capture=summary)
            for seed in seeds:
                do_seed(ds, seed, args, env)
    if args.dry_run:
        return 0
    write_outputs(args, seeds, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())

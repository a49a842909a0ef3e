"""Pixel tasks (issue #25): the scripted expert, CNN-BC, MTM without images and MTM on
mtm/ReacherPixels-v0 and mtm/PusherPixels-v0, the "Pixel tasks" table of BENCHMARKS.md.

For each task, its dataset is the recipe of datasets/README.md (collected by this script when the
file is absent, with the recipe's `mtm collect` command); for each training seed k three rows are
trained and their **final** checkpoints evaluated in mode bc:

    cnn-bc      `mtm train --config cnn-bc`             the image baseline (mtm.model.cnn_bc)
    mtm-noimg   `mtm train --config pixels --set tokens.image_keys=[]`   the frame's worth: what MTM
                                                        reaches from the state alone
    mtm         `mtm train --config pixels`             MTM with its image tokens

plus, once per task, the scripted expert on the same resets (`mtm collect --policy expert` over
them; it reads the object from the simulator, the bar 100 stands for). Every training: `--set
train.seed=k --set train.device=cpu --set train.precision=auto` and the task's own settings
(PusherPixels' episodes last 100 steps: `data.rtg_horizon=100`); every evaluation: 50 episodes in
10 envs on reset seeds 5000-5049, outside the data's (0-2999 and 0-1999), normalised by the data's
references (0 = random, 100 = the scripted expert over the data's resets). A cell is one (task,
seed, row); its record keeps the score (mean and std over episodes), the success rate where the
task defines one, the return, the training's CPU seconds (every attempt) and the CPU path and
precision it resolved, and its commands.

Cells run seed by seed (a whole seed-0 table first). Every finished cell is a record in the results
file (written under a lock, atomically), and a cell with a record is never run again: run the same
command to resume; an interrupted training continues with `mtm train --resume` (scripts/sweep_cells.py).
About 1.5 CPU-hours a seed at one thread with native bf16 (MTM ~15 CPU-minutes a task, CNN-BC ~13,
MTM without images ~5, the evaluations a few; the datasets' collection ~2 and ~20 minutes once).

Layout:

    runs/bench/pixels/<task>/seed<k>/<row>/          run directory, eval.json (git-ignored)
    runs/bench/pixels/<task>/seed<k>/<row>.steps.json   every attempt of every command of the cell
    runs/bench/pixels/<task>/expert.hdf5             the expert's episodes on the evaluation resets
    results/pixel_tasks.json                         settings, every finished cell
    BENCHMARKS.md, between <!-- pixel-tasks:begin --> and <!-- pixel-tasks:end -->: the tables

Usage:
  MUJOCO_GL=egl python scripts/bench_pixels.py --stop-at 19:30     # no cell starts after 19:30 UTC
  python scripts/bench_pixels.py --tasks ReacherPixels --seeds 1 --rows mtm
  python scripts/bench_pixels.py --steps 20 --episodes 2 --seeds 1 --work /tmp/p --results /tmp/p.json --no-benchmarks
  python scripts/bench_pixels.py --dry-run                          # print the commands
  python scripts/bench_pixels.py --table-only                       # rebuild the tables from the results
"""

from __future__ import annotations

import bench_common  # first: threads and OpenMP waiting, as under the mtm command

import argparse
import datetime
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from envs.references import normalized_score
from mtm.checkpoint import step_dir
from mtm.config import RunConfig, load_config
from mtm.config.loader import resolve_config_path
from mtm.data.trajectories import load_trajectories
from mtm.hardware import PRECISIONS
from sweep_cells import (MTM, ROOT, Commands, add_sweep_options, command_env, joined, mean_spread, now, parse_stop_at,
                         rel, run_sweep, train_steps_cpu_s, training_cpu_minutes, without_deadline,
                         write_block)

os.environ.setdefault("MUJOCO_GL", "egl")  # the pixel tasks render their observations offscreen

BENCHMARKS = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- pixel-tasks:begin -->", "<!-- pixel-tasks:end -->"
HEADING = "Pixel tasks (issue #25)"
SEEDS = 3
EVAL_SEED = 5000  # reset seeds 5000..5049: outside every dataset's resets


class Task(NamedTuple):
    env: str
    data: str  # the dataset file, relative to the repository (datasets/ is git-ignored)
    collect: tuple[str, ...]  # the recipe's `mtm collect` options (datasets/README.md), without --output
    train_set: tuple[str, ...]  # the task's own `mtm train --set` items, for every row


TASKS = {
    "ReacherPixels": Task("mtm/ReacherPixels-v0", "datasets/reacher-pixels-v0-clean.hdf5",
                          ("--episodes", "3000", "--num-envs", "8", "--seed", "0", "--noise", "0,0.1"), ()),
    "PusherPixels": Task("mtm/PusherPixels-v0", "datasets/pusher-pixels-v0.hdf5",
                         ("--episodes", "2000", "--num-envs", "8", "--seed", "0", "--noise", "0,0.1"),
                         ("data.rtg_horizon=100",)),
}


class Row(NamedTuple):
    config: str
    sets: tuple[str, ...]
    label: str


ROWS = {"cnn-bc": Row("cnn-bc", (), "CNN-BC"),
        "mtm-noimg": Row("pixels", ("tokens.image_keys=[]",), "MTM (no images)"),
        "mtm": Row("pixels", (), "MTM")}


def config_steps(config: str) -> int:
    return load_config(RunConfig, resolve_config_path(config)).train.steps


# ------------------------------------------------------------------------------------------ cells


def cell_key(task: str, seed: int | None, row: str) -> str:
    return f"{task}/expert" if row == "expert" else f"{task}/seed{seed}/{row}"


def cell_order(tasks: Sequence[str], seeds: Sequence[int], rows: Sequence[str]) -> Iterator[tuple[str, int | None, str]]:
    """The expert of every task, then (task, seed, row) seed by seed: a whole seed-0 table first."""
    for task in tasks:
        yield task, None, "expert"
    for seed in seeds:
        for task in tasks:
            for row in rows:
                yield task, seed, row


def train_command(task: str, row: str, run_dir: Path, seed: int, args) -> list:
    steps = args.steps or config_steps(ROWS[row].config)
    if (ROOT / run_dir / "checkpoints" / "last").exists():
        return [MTM, "train", "--resume", run_dir, "--no-progress"]
    cmd = [MTM, "train", "--config", ROWS[row].config, "--data", TASKS[task].data, "--run-dir", run_dir,
           "--set", f"train.seed={seed}", "--set", f"train.steps={steps}", "--set", "train.device=cpu",
           "--set", f"train.precision={args.precision}"]
    for item in (*TASKS[task].train_set, *ROWS[row].sets):
        cmd += ["--set", item]
    cmd.append("--no-progress")
    if (ROOT / run_dir).exists():
        cmd.append("--overwrite")
    return cmd


def eval_command(checkpoint: Path, report: Path, args) -> list:
    return [MTM, "eval", "--checkpoint", checkpoint, "--episodes", str(args.episodes),
            "--num-envs", str(min(args.num_envs, args.episodes)), "--seed", str(EVAL_SEED), "--mode", "bc",
            "--device", "cpu", "--precision", args.precision, "--no-progress", "--output", report]


def ensure_data(task: str, cmds: Commands) -> bool:
    """The task's dataset, collected by its recipe when the file is absent."""
    spec = TASKS[task]
    if (ROOT / spec.data).exists():
        return True
    return cmds.run("collect", [MTM, "collect", "--env", spec.env, "--policy", "expert", *spec.collect,
                                "--output", spec.data, "--no-progress"])


def run_expert(task: str, args, env: dict[str, str], deadline: datetime.datetime | None) -> dict | None:
    """The scripted expert's returns on the evaluation's resets (normalised when the table is written,
    by the references the policies' reports name)."""
    work = rel(args.work / task)
    cmds = Commands(ROOT / work / "expert.steps.json", env, deadline, args.dry_run)
    episodes = work / "expert.hdf5"
    if not (ROOT / episodes).exists() and not cmds.run("collect", [
            MTM, "collect", "--env", TASKS[task].env, "--policy", "expert", "--episodes", str(args.episodes),
            "--num-envs", str(min(args.num_envs, args.episodes)), "--seed", str(EVAL_SEED), "--output", episodes,
            "--no-progress"]):
        return None
    if args.dry_run:
        return None
    data = load_trajectories(ROOT / episodes)
    returns = [float(r) for r in data.episode_returns()]
    return {"task": task, "row": "expert", "seed": None, "finished": now().isoformat(timespec="seconds"),
            "returns": returns, "episodes": len(returns), "commands": cmds.first_commands()}


def run_cell(task: str, seed: int | None, row: str, args, env: dict[str, str],
             deadline: datetime.datetime | None) -> dict | None:
    """Train and evaluate one cell (skipping what is already on disk); its record, or None when it
    did not finish (a failure, the deadline, or a dry run)."""
    if row == "expert":
        return run_expert(task, args, env, deadline)
    work = rel(args.work / task / f"seed{seed}")
    run_dir = work / row
    cmds = Commands(ROOT / work / f"{row}.steps.json", env, deadline, args.dry_run)
    if not ensure_data(task, cmds):
        return None
    steps = args.steps or config_steps(ROWS[row].config)
    ckpt = step_dir(run_dir, steps)
    if not (ROOT / ckpt).exists() and not cmds.run("train", train_command(task, row, run_dir, seed, args)):
        return None
    report_path = run_dir / "eval.json"
    if not (ROOT / report_path).exists() and not cmds.run("eval", eval_command(ckpt, report_path, args)):
        return None
    if args.dry_run:
        return None
    report = bench_common.read_json(ROOT / report_path) or {}
    runtime = (bench_common.read_json(ROOT / ckpt / "metadata.json") or {}).get("runtime", {})
    return {
        "task": task, "seed": seed, "row": row, "config": ROWS[row].config, "steps": steps,
        "finished": now().isoformat(timespec="seconds"),
        "score": report.get("normalized_score_mean"), "score_episode_std": report.get("normalized_score_std"),
        "success_rate": report.get("success_rate"), "return": report.get("return_mean"),
        "references": report.get("reference_scores"), "episodes": report.get("episodes"),
        "env_steps_per_s": report.get("env_steps_per_s"),
        "train_cpu_s": cmds.total("train", "cpu_s"), "train_wall_s": cmds.total("train", "wall_s"),
        "train_attempts": len(cmds.done.get("train", [])), "train_steps_cpu_s": train_steps_cpu_s(ROOT / run_dir),
        "train_precision": runtime.get("precision", {}).get("dtype"), "cpu": runtime.get("cpu"),
        "threads": runtime.get("threads"),
        "commands": cmds.first_commands(),
    }


def task_info(task: str) -> dict:
    return {"env": TASKS[task].env, "data": TASKS[task].data}


def settings_of(args) -> dict:
    return {"steps": args.steps, "episodes": args.episodes, "num_envs": args.num_envs, "eval_seed": EVAL_SEED,
            "precision": args.precision, "threads": args.threads}


# ------------------------------------------------------------------------------------------ tables


def expert_score(results: dict, task: str) -> float | None:
    """The expert's mean normalised score over its episodes, by the references of the task's policy reports."""
    cells = results.get("cells", {})
    expert = cells.get(cell_key(task, None, "expert"))
    refs = next((r["references"] for r in cells.values() if r.get("task") == task and r.get("references")), None)
    if expert is None or refs is None:
        return None
    return float(np.mean([normalized_score(x, refs["min"], refs["max"]) for x in expert["returns"]]))


def records_of(results: dict, task: str, row: str) -> list[dict]:
    """The finished cells of one task and row, by seed."""
    return [r for r in sorted(results.get("cells", {}).values(), key=lambda r: r.get("seed") or 0)
            if r.get("task") == task and r.get("row") == row]


def by_row(results: dict, task: str, row: str, field: str) -> list[float | None]:
    return [r.get(field) for r in records_of(results, task, row)]


def render(results: dict, seeds: int = SEEDS, source: Path = Path("results/pixel_tasks.json")) -> str:
    cells = [r for r in results.get("cells", {}).values() if r.get("row") != "expert"]
    expected = len(TASKS) * len(ROWS) * seeds
    s = results.get("settings") or {}
    L = [BEGIN, "", f"Generated by `scripts/bench_pixels.py` from `{source}` — do not edit by hand "
         f"(`python scripts/bench_pixels.py --table-only --results {source}` rebuilds it).", ""]
    if len(cells) < expected:
        L += [f"**Partial: {len(cells)} of the sweep's {expected} model cells have finished** ({len(TASKS)} tasks x "
              f"{len(ROWS)} models x {seeds} seeds; a figure over fewer than {seeds} seeds says its n, a dash has none "
              "yet). It resumes where it stopped: `MUJOCO_GL=egl python scripts/bench_pixels.py --stop-at HH:MM`.", ""]
    L += ["- **models**: CNN-BC = `--config cnn-bc`; MTM = `--config pixels`; MTM (no images) = the same with "
          "`tokens.image_keys=[]`; each config's own steps" + (f" (here {s['steps']})" if s.get("steps") else "")
          + "; PusherPixels with `data.rtg_horizon=100`; training seed k = 0.."
          f"{seeds - 1}; datasets by the recipes of datasets/README.md",
          f"- **evaluation**: final checkpoint, mode bc, {s.get('episodes', 50)} episodes on reset seeds "
          f"{EVAL_SEED}–{EVAL_SEED + s.get('episodes', 50) - 1} (outside the data's), normalised (0 = random, 100 = "
          "the scripted expert over the data's resets), **mean ± std over training seeds**; the expert column is the "
          "scripted expert (privileged: it reads the object from the simulator) on the same resets"]
    if cells:
        L.append(f"- **CPU**: {joined(r.get('cpu') for r in cells)}, {joined(r.get('threads') for r in cells)} thread(s) "
                 f"a command; training precision by `auto`: {joined(r.get('train_precision') for r in cells)}")
    adopted = sorted(cell_key(r["task"], r["seed"], r["row"]) for r in cells if not r.get("commands"))
    if adopted:
        L.append(f"- **adopted cells** ({', '.join(adopted)}): trained and evaluated by these same commands before the "
                 "sweep ran, their run folders copied into its work folder, so it recorded no command of theirs")
    L += ["", "| task | expert | " + " | ".join(r.label for r in ROWS.values()) + " |",
          "|---|---:|" + "---:|" * len(ROWS)]
    for task in TASKS:
        expert = expert_score(results, task)
        scores = [mean_spread(by_row(results, task, row, "score"), seeds, "std") for row in ROWS]
        L.append(f"| {task} | {'–' if expert is None else f'{expert:.1f}'} | " + " | ".join(scores) + " |")
    L += ["", "Success rate (PusherPixels: the puck within 5 cm of the goal at the last step; ReacherPixels defines "
          "none) and training CPU-minutes (the training steps' own CPU time, cumulative over resumes, as the run's "
          "metrics.jsonl records it), mean over seeds:", "",
          "| task | " + " | ".join(f"{r.label} success | {r.label} CPU-min" for r in ROWS.values()) + " |",
          "|---|" + "---:|---:|" * len(ROWS)]
    for task in TASKS:
        parts = []
        for row in ROWS:
            rates = [100 * v for v in by_row(results, task, row, "success_rate") if v is not None]
            minutes = [m for m in map(training_cpu_minutes, records_of(results, task, row)) if m is not None]
            parts += [f"{np.mean(rates):.0f} %" if rates else "–", f"{np.mean(minutes):.1f}" if minutes else "–"]
        L.append(f"| {task} | " + " | ".join(parts) + " |")
    commands = example_commands(results)
    if commands:
        L += ["", "Each cell's commands (as recorded for the first cell of each model):", ""]
        L += [f"    {c}" for c in commands]
    L += ["", END]
    return "\n".join(L)


def example_commands(results: dict) -> list[str]:
    """The recorded commands of one cell of each row: the first (by seed, then task) that the sweep ran
    itself, without the deadline's wrapper."""
    lines = []
    for row in ["expert", *ROWS]:
        recs = [r for r in results.get("cells", {}).values() if r.get("row") == row and r.get("commands")]
        if not recs:  # none yet, or every one adopted
            continue
        first = min(recs, key=lambda r: (r.get("seed") or 0, list(TASKS).index(r["task"])))
        commands = first.get("commands", {})
        for name in ("collect", "train", "eval"):  # the order they ran in
            if name in commands:
                lines.append(without_deadline(commands[name]))
    return lines


def write_outputs(results: dict, args) -> None:
    block = render(results, args.seeds, rel(args.results))
    print(block)
    if not args.no_benchmarks:
        print(write_block(BENCHMARKS, BEGIN, END, block, HEADING))


# ------------------------------------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated: {', '.join(TASKS)}")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated: {', '.join(ROWS)}")
    p.add_argument("--seeds", type=int, default=SEEDS, help=f"training seeds 0..N-1 (default {SEEDS})")
    p.add_argument("--steps", type=int, default=None, help="training steps of every model (default: each config's own)")
    p.add_argument("--episodes", type=int, default=50, help="evaluation episodes (default 50)")
    p.add_argument("--num-envs", type=int, default=10)
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    add_sweep_options(p, ROOT / "runs" / "bench" / "pixels", ROOT / "results" / "pixel_tasks.json",
                      "rebuild the tables from the results file")
    return p


def main() -> int:
    args = build_parser().parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    rows = [r for r in args.rows.split(",") if r]
    bad = [f"task {t}" for t in tasks if t not in TASKS] + [f"row {r}" for r in rows if r not in ROWS]
    if bad:
        print(f"error: unknown {', '.join(bad)}; tasks: {', '.join(TASKS)}; rows: {', '.join(ROWS)}", file=sys.stderr)
        return 1
    if args.table_only:
        write_outputs(bench_common.read_json(args.results) or {}, args)
        return 0
    deadline = parse_stop_at(args.stop_at, now())
    env = command_env(args.threads)

    def done_line(key: str, rec: dict) -> str:
        if rec["row"] == "expert":
            return f"cell {key}: return {np.mean(rec['returns']):.2f} over {rec['episodes']} episodes"
        return f"cell {key}: {rec['score']:.1f}; {(rec['train_cpu_s'] or 0) / 60:.1f} training CPU-minutes"

    # The tasks' datasets are collected by the cells that need them, so every task counts as present.
    return run_sweep(args, settings_of(args), deadline, ROOT, tasks, task_info,
                     lambda present: cell_order(present, range(args.seeds), rows), lambda c: cell_key(*c),
                     lambda c, infos: run_cell(*c, args, env, deadline), done_line,
                     lambda results: write_outputs(results, args), files=lambda task: [])


if __name__ == "__main__":
    sys.exit(main())

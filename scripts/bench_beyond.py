"""Beyond the data (issue #23): MLP-BC, IQL and MTM (RCBC and plan) on the six shared datasets.

For each dataset (the recipe-v2 table's six, from ../shared/datasets, then hopper-medium-expert-v5:
hopper-medium-v5 and hopper-expert-v5 trained on together, as D4RL's medium-expert files are made,
data of a kind the recipe was not tuned on, in a table of its own beside the six's) and each
training seed k, three rows are trained and their **final** checkpoints evaluated:

    mlp-bc   `mtm train --config mlp-bc`, the recipe-v2 MLP-BC (scripts/bench_quality.py: the config's
             own 3000 steps), then `mtm eval --mode bc`
    iql      `mtm train --config mlp-iql --set train.steps=--iql-steps` (default the config's 100000),
             then `mtm eval --mode bc`
    mtm      `mtm train --config small --set model.critic=true --set model.critic_updates=--critic-updates`
             (default 8) and every --mtm-set, then two evaluations of the same checkpoint: `--mode
             rcbc` and `--mode plan` with every --plan-option (one training, both MTM columns)

Every training: `--set train.seed=k --set train.device=cpu --set train.precision=auto` (--precision);
every evaluation: `--episodes 20 --num-envs 10 --seed 100 --device cpu`, normalised score. A cell is
one (dataset, seed, row); its record keeps each mode's score (mean and std over episodes), env
steps/s and precision, the training's CPU seconds (all its attempts), the CPU path and precision the
run resolved, and the commands. The options that shape the cells (steps, critic updates, --mtm-set,
--plan-option, episodes, envs, precision, threads) are the sweep's settings, stored in the results
file: an invocation with others is refused unless it has a --results file of its own.

Cells run in the order that fills the table soonest: seed 0 of every dataset and row (a whole
seed-0 table), then seed 1, then seed 2. Every finished cell is a record in the results file
(written under a lock, atomically), and a cell with a record is never run again: run the same
command to resume. An interrupted training continues with `mtm train --resume`; an evaluation
without its report is run again. One exception: an MTM evaluation made otherwise than the current
defaults and --plan-option say (the defaults changed since) is out of date, and only that
evaluation runs again: one with the policy's action history shown (the default until 2026-12-07) is
kept beside as eval_<mode>.history.json, a plan evaluation whose planner (candidates, horizon,
noise, temperature) differs as eval_plan.t<temperature>.json. With `--stop-at HH:MM` (UTC) no cell starts after that time and a
running command gets Ctrl-C (SIGINT) at it: training saves a checkpoint and stops, so the next
invocation continues it. About 12-15 CPU-hours in all at one thread (a dataset and seed: IQL's
100000 steps ~22 CPU-min, MTM with 8 critic updates a step ~20, MLP-BC ~1, the evaluations a few).
Two invocations side by side (one per core) must take disjoint --datasets: each runs every cell of
its own datasets that has no record, and both write into the one results file under its lock.

Layout:

    runs/bench/beyond/<dataset>/seed<k>/<row>/              run directory, eval_<mode>.json (git-ignored)
    runs/bench/beyond/<dataset>/seed<k>/<row>.steps.json    every attempt of every command of the cell
    results/beyond_the_data.json                            settings, datasets, every finished cell
    BENCHMARKS.md, between <!-- beyond-the-data:begin --> and <!-- beyond-the-data:end -->: the tables

Usage:
  python scripts/bench_beyond.py --stop-at 10:30                       # the sweep; no cell starts after 10:30 UTC
  python scripts/bench_beyond.py --datasets hopper-medium-replay-v5,hopper-medium-v5,hopper-expert-v5 --stop-at 10:30
  python scripts/bench_beyond.py --datasets hopper-medium-replay-v5 --seeds 1 --rows mtm
  python scripts/bench_beyond.py --plan-option=--plan-horizon=2 --results results/beyond_h2.json --work runs/bench/beyond-h2
  python scripts/bench_beyond.py --mlp-steps 20 --iql-steps 20 --mtm-steps 20 --seeds 1 --episodes 2 --work /tmp/b --results /tmp/b.json --no-benchmarks
  python scripts/bench_beyond.py --dry-run                             # print the commands
  python scripts/bench_beyond.py --table-only                          # rebuild the tables from the results
"""

from __future__ import annotations

import bench_common  # first: threads and OpenMP waiting, as under the mtm command

import argparse
import datetime
import shlex
import statistics
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from mtm.checkpoint import step_dir
from mtm.config import RunConfig, load_config
from mtm.config.loader import resolve_config_path
from mtm.data.trajectories import load_trajectories
from mtm.errors import ConfigError
from mtm.hardware import PRECISIONS
from mtm.planning import DEFAULT_TEMPERATURE
from mtm.policy_config import PolicyConfig
from sweep_cells import (MTM, ROOT, Commands, add_sweep_options, behaviour_scores, command_env, joined, mean_spread, now,
                         parse_stop_at, rel, run_sweep, train_steps_cpu_s, training_cpu_minutes, without_deadline,
                         write_block)

DATA_DIR = ROOT.parent / "shared" / "datasets"
BENCHMARKS = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- beyond-the-data:begin -->", "<!-- beyond-the-data:end -->"
HEADING = "Beyond the data (issue #23)"
# The recipe-v2 quality table's datasets, in its order (the mixed-quality files first).
DATASETS = ["hopper-medium-replay-v5", "halfcheetah-medium-replay-v5", "hopper-medium-v5", "halfcheetah-medium-v5",
            "hopper-expert-v5", "halfcheetah-expert-v5"]
# Data of a kind the recipe was not tuned on, reported beside the table (issue #23): a medium +
# expert mixture made as D4RL's medium-expert files are, both files' episodes trained on together
# (`mtm train --data A --data B`, every window equally likely).
MIXTURES = {"hopper-medium-expert-v5": ("hopper-medium-v5", "hopper-expert-v5")}
SEEDS = 3
EVAL_SEED = 100  # reset seeds 100..119, as the planning pilot's (BENCHMARKS.md)
CRITIC_UPDATES = 8


class Row(NamedTuple):
    config: str  # the built-in config it trains
    modes: tuple[str, ...]  # the evaluations of its final checkpoint
    label: str  # its column(s) of the training-cost table


ROWS = {"mlp-bc": Row("mlp-bc", ("bc",), "MLP-BC"),
        "iql": Row("mlp-iql", ("bc",), "IQL"),
        "mtm": Row("small", ("rcbc", "plan"), "MTM")}
# The score table: (row, mode, column).
COLUMNS = [("mlp-bc", "bc", "MLP-BC"), ("iql", "bc", "IQL"), ("mtm", "rcbc", "MTM (RCBC)"), ("mtm", "plan", "MTM (plan)")]
# Set by their own options (the final checkpoint's step and the settings depend on them), not by --mtm-set.
OWN_OPTIONS = {"train.steps": "--mtm-steps", "train.seed": "--seeds", "train.device": None,
               "train.precision": "--precision", "model.critic": None, "model.critic_updates": "--critic-updates"}


def config_steps(config: str) -> int:
    """The training steps of a built-in config (mtm/configs/NAME.yaml)."""
    return load_config(RunConfig, resolve_config_path(config)).train.steps


# ------------------------------------------------------------------------------------------ cells


def data_files(ds: str) -> list[Path]:
    """The shared files a dataset of the sweep is made of (several for a mixture)."""
    return [DATA_DIR / f"{name}.hdf5" for name in MIXTURES.get(ds, (ds,))]


def cell_key(ds: str, seed: int, row: str) -> str:
    return f"{ds}/seed{seed}/{row}"


def cell_order(datasets: Sequence[str], seeds: Sequence[int], rows: Sequence[str]) -> Iterator[tuple[str, int, str]]:
    """(dataset, seed, row), the table filled soonest: every dataset and row of seed 0 (a dataset's
    rows side by side, so its line of the table completes first), then seed 1, ..."""
    for seed in seeds:
        for ds in datasets:
            for row in rows:
                yield ds, seed, row


def row_steps(row: str, args) -> int:
    return {"mlp-bc": args.mlp_steps, "iql": args.iql_steps, "mtm": args.mtm_steps}[row]


def row_settings(row: str, args) -> list[str]:
    """The --set items of a row beyond seed, steps, device and precision."""
    if row != "mtm":
        return []
    return ["model.critic=true", f"model.critic_updates={args.critic_updates}", *args.mtm_set]


def train_command(row: str, data: Sequence[Path], run_dir: Path, seed: int, args) -> list:
    """`data`: the dataset's files (a mixture has several: one --data each)."""
    steps = row_steps(row, args)
    if (ROOT / run_dir / "checkpoints" / "last").exists():
        return [MTM, "train", "--resume", run_dir, "--set", f"train.steps={steps}", "--no-progress"]
    cmd = [MTM, "train", "--config", ROWS[row].config, *(a for path in data for a in ("--data", path)),
           "--run-dir", run_dir, "--set", f"train.seed={seed}", "--set", f"train.steps={steps}", "--set", "train.device=cpu",
           "--set", f"train.precision={args.precision}"]
    for item in row_settings(row, args):
        cmd += ["--set", item]
    cmd.append("--no-progress")
    if (ROOT / run_dir).exists():
        cmd.append("--overwrite")
    return cmd


def eval_command(checkpoint: Path, mode: str, report: Path, args) -> list:
    cmd = [MTM, "eval", "--checkpoint", checkpoint, "--episodes", str(args.episodes),
           "--num-envs", str(min(args.num_envs, args.episodes)), "--seed", str(EVAL_SEED), "--mode", mode,
           "--device", "cpu", "--precision", args.precision, "--no-progress", "--output", report]
    return cmd + (list(args.plan_option) if mode == "plan" else [])


def mode_record(report: dict, cmds: Commands, mode: str) -> dict:
    """What the tables need of one evaluation report."""
    plan = report.get("plan") or {}
    return {"score": report.get("normalized_score_mean"), "score_episode_std": report.get("normalized_score_std"),
            "return": report.get("return_mean"), "length": report.get("length_mean"),
            "episodes": report.get("episodes"), "env_steps_per_s": report.get("env_steps_per_s"),
            "precision": (report.get("precision") or {}).get("dtype"),
            "plan_precision": (plan.get("precision") or {}).get("dtype"),
            "planner": {k: v for k, v in plan.items() if k != "precision"} or None,
            "action_history": report.get("action_history"),
            "eval_cpu_s": cmds.total(f"eval_{mode}", "cpu_s"), "eval_wall_s": cmds.total(f"eval_{mode}", "wall_s")}


# What a plan evaluation's report says of its planner that the settings decide (the candidates, the
# horizon, the noise and the temperature: PolicyConfig's defaults, the score's default temperature and
# --plan-option). A plan evaluation made with other ones (the defaults changed since) is out of date.
PLANNER_KEYS = ("candidates", "horizon", "noise", "temperature", "relative_temperature", "max_gain")


def expected_planner(args) -> dict:
    """The PLANNER_KEYS the sweep's mode-plan evaluations run with (an MTM with a critic: score q)."""
    options = dict(option.split("=", 1) for option in args.plan_option)
    config = PolicyConfig()
    temperature = options.get("--plan-temperature")
    score = options.get("--plan-score", "auto")
    score = "q" if score == "auto" else score  # the MTM row trains a critic: auto scores by its Q
    return {"candidates": int(options.get("--plan-candidates", config.plan_candidates)),
            "horizon": int(options.get("--plan-horizon", config.plan_horizon)),
            "noise": float(options.get("--plan-noise", config.plan_noise)),
            "max_gain": float(options["--plan-max-gain"]) if "--plan-max-gain" in options else config.plan_max_gain,
            "relative_temperature": float(options["--plan-relative-temperature"])
            if "--plan-relative-temperature" in options else config.plan_relative_temperature,
            "temperature": float(temperature) if temperature is not None else
            config.plan_temperature if config.plan_temperature is not None else DEFAULT_TEMPERATURE[score]}


def planner_is_current(planner: dict | None, args) -> bool:
    return planner is not None and {k: planner.get(k) for k in PLANNER_KEYS} == expected_planner(args)


def out_of_date(mode: str, report: dict, args) -> str | None:
    """Why an MTM evaluation's report (or a cell's record of it) no longer answers the sweep's
    command, as the stem its file is kept beside under; None if it does. The policy's action history
    (PolicyConfig.action_history, shown by default until 2026-12-07; reports and records from before
    the records kept it all showed it) and, in mode plan, its planner."""
    shown = report.get("action_history", True)
    if shown != PolicyConfig().action_history:
        return f"eval_{mode}.history" if shown else f"eval_{mode}.nohistory"
    if mode == "plan":
        planner = report.get("plan", report.get("planner"))
        if not planner_is_current(planner, args):
            return f"eval_plan.t{(planner or {}).get('temperature')}"
    return None


def record_is_stale(rec: dict, args) -> bool:
    """An MTM cell evaluated otherwise than the sweep's commands now do: it runs again (its training
    is kept; the evaluations that are out of date run again)."""
    return rec.get("row") == "mtm" and any(out_of_date(mode, m, args) for mode, m in rec.get("modes", {}).items())


def run_cell(ds: str, seed: int, row: str, args, env: dict[str, str], deadline: datetime.datetime | None) -> dict | None:
    """Train and evaluate one cell (skipping what is already on disk); its record, or None when it
    did not finish (a failure, the deadline, or a dry run)."""
    data = [rel(path) for path in data_files(ds)]
    work = rel(args.work / ds / f"seed{seed}")
    run_dir = work / row
    cmds = Commands(ROOT / work / f"{row}.steps.json", env, deadline, args.dry_run)
    steps = row_steps(row, args)
    ckpt = step_dir(run_dir, steps)
    if not (ROOT / ckpt).exists() and not cmds.run("train", train_command(row, data, run_dir, seed, args)):
        return None
    for mode in ROWS[row].modes:
        report = run_dir / f"eval_{mode}.json"
        base = None
        if row == "mtm" and (ROOT / report).exists() and not args.dry_run:
            base = out_of_date(mode, bench_common.read_json(ROOT / report) or {}, args)
        if base is not None:  # out of date: kept beside, named by what differs
            old = next(name for name in (base, *(f"{base}.{i}" for i in range(1, 1000)))
                       if not (ROOT / run_dir / f"{name}.json").exists() and name not in cmds.done)
            (ROOT / report).rename(ROOT / run_dir / f"{old}.json")
            if f"eval_{mode}" in cmds.done:  # its attempts stay in the cell's log, under the same name
                cmds.done[old] = cmds.done.pop(f"eval_{mode}")
                cmds.save()
        if not (ROOT / report).exists() and not cmds.run(f"eval_{mode}", eval_command(ckpt, mode, report, args)):
            return None
    if args.dry_run:
        return None
    metadata = bench_common.read_json(ROOT / ckpt / "metadata.json") or {}
    runtime = metadata.get("runtime", {})
    modes = {mode: mode_record(bench_common.read_json(ROOT / run_dir / f"eval_{mode}.json") or {}, cmds, mode)
             for mode in ROWS[row].modes}
    return {
        "dataset": ds, "seed": seed, "row": row, "config": ROWS[row].config, "finished": now().isoformat(timespec="seconds"),
        "steps": steps, "modes": modes,
        "train_cpu_s": cmds.total("train", "cpu_s"), "train_wall_s": cmds.total("train", "wall_s"),
        "train_attempts": len(cmds.done.get("train", [])), "train_steps_cpu_s": train_steps_cpu_s(ROOT / run_dir),
        "train_precision": runtime.get("precision", {}).get("dtype"), "cpu": runtime.get("cpu"),
        "threads": runtime.get("threads"), "torch": metadata.get("torch_version"),
        "cell_cpu_s": round(sum(cmds.total(n, "cpu_s") or 0.0 for n in cmds.done), 1),
        "commands": cmds.first_commands(),
    }


def dataset_info(ds: str) -> dict:
    """The behaviour in the dataset, normalised: its mean and its best episode."""
    data = [load_trajectories(path) for path in data_files(ds)]
    return {"episodes": sum(int(d.num_episodes) for d in data), **behaviour_scores(*data)}


ROW_SETTINGS = {"mlp-bc": ("mlp_steps",), "iql": ("iql_steps",),
                "mtm": ("mtm_steps", "critic_updates", "mtm_set", "plan_options")}


def settings_of(args, rows: Sequence[str] = tuple(ROWS)) -> dict:
    """The settings that shape the cells of `rows`: the evaluation's, and each of those rows' own.
    A sweep of some rows records only theirs, so the baselines can run before the MTM recipe is
    settled (sweep_cells.settings_error with partial=True compares the settings both have)."""
    every = {"mlp_steps": args.mlp_steps, "iql_steps": args.iql_steps, "mtm_steps": args.mtm_steps,
             "critic_updates": args.critic_updates, "mtm_set": list(args.mtm_set), "plan_options": list(args.plan_option),
             "episodes": args.episodes, "num_envs": args.num_envs, "eval_seed": EVAL_SEED, "precision": args.precision,
             "threads": args.threads}
    other_rows = {key for row, keys in ROW_SETTINGS.items() if row not in rows for key in keys}
    return {key: value for key, value in every.items() if key not in other_rows}


# ------------------------------------------------------------------------------------------ tables


def records_by(results: dict) -> dict[tuple[str, str], list[dict]]:
    """{(dataset, row): [records by seed]}."""
    grouped: dict[tuple[str, str], list[dict]] = {}
    for rec in sorted(results.get("cells", {}).values(), key=lambda r: r["seed"]):
        grouped.setdefault((rec["dataset"], rec["row"]), []).append(rec)
    return grouped


def table_datasets(results: dict) -> list[str]:
    """The six datasets in their order, then any other the results file has but the mixtures (their
    table is beside this one)."""
    named = set(results.get("datasets", {})) | {r["dataset"] for r in results.get("cells", {}).values()}
    return DATASETS + sorted(named - set(DATASETS) - set(MIXTURES))


def mean_of(values: Sequence[float | None], digits: int, thousands: bool = False) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{statistics.mean(values):{',' if thousands else ''}.{digits}f}"


def settings_command(settings: dict) -> str:
    """The `python scripts/bench_beyond.py ...` line that runs a sweep with these settings (the options
    that differ from the defaults)."""
    defaults = settings_of(build_parser().parse_args([]))
    flags = {"mlp_steps": "--mlp-steps", "iql_steps": "--iql-steps", "mtm_steps": "--mtm-steps",
             "critic_updates": "--critic-updates", "episodes": "--episodes", "num_envs": "--num-envs",
             "precision": "--precision", "threads": "--threads"}
    parts = ["python scripts/bench_beyond.py"]
    parts += [f"{flag} {settings[key]}" for key, flag in flags.items() if key in settings and settings[key] != defaults[key]]
    parts += [f"--mtm-set {shlex.quote(item)}" for item in settings.get("mtm_set", [])]
    parts += [shlex.quote(f"--plan-option={option}") for option in settings.get("plan_options", [])]
    return " ".join(parts)


def paths_text(cells: Sequence[dict]) -> str:
    """The CPU path(s), torch and the precision each row and mode resolved, as found in the records."""
    train = ", ".join(f"{ROWS[row].label} {joined(r.get('train_precision') for r in cells if r['row'] == row)}"
                      for row in ROWS)
    evals = ", ".join(f"{label} {joined(r['modes'].get(mode, {}).get('precision') for r in cells if r['row'] == row)}"
                      for row, mode, label in COLUMNS)
    plan = joined(r["modes"].get("plan", {}).get("plan_precision") for r in cells if r["row"] == "mtm")
    return (f"CPU path {joined(r.get('cpu') for r in cells)} (torch {joined(r.get('torch') for r in cells)}, "
            f"threads {joined(r.get('threads') for r in cells)} a command); precision auto resolved to: training "
            f"{train}; evaluation {evals}, the planner's candidates {plan}")


def example_commands(results: dict) -> list[str]:
    """The recorded commands of one cell of each row (the first finished), without the deadline's wrapper."""
    lines = []
    for row in ROWS:
        recs = [r for r in results.get("cells", {}).values() if r["row"] == row]
        if not recs:
            continue
        order = [*table_datasets(results), *MIXTURES]
        first = min(recs, key=lambda r: (r["seed"], order.index(r["dataset"])))
        commands = first.get("commands", {})
        for name in ["train", *(f"eval_{mode}" for mode in ROWS[row].modes)]:  # the order they ran in
            if name in commands:
                lines.append(without_deadline(commands[name]))
    return lines


def render(results: dict, seeds: int = SEEDS) -> str:
    s = {**settings_of(build_parser().parse_args([])), **(results.get("settings") or {})}  # the defaults until run
    cells = list(results.get("cells", {}).values())
    datasets = table_datasets(results)
    named = set(results.get("datasets", {})) | {r["dataset"] for r in cells}
    mixtures = [ds for ds in MIXTURES if ds in named]
    grouped = records_by(results)
    expected = (len(datasets) + len(mixtures)) * len(ROWS) * seeds
    L = [BEGIN, "", "Generated by `scripts/bench_beyond.py` from `results/beyond_the_data.json` — do not edit by hand "
         "(`python scripts/bench_beyond.py --table-only` rebuilds it).", ""]
    if len(cells) < expected:
        L += [f"**Partial: {len(cells)} of the sweep's {expected} cells have finished** "
              f"({len(datasets) + len(mixtures)} datasets x "
              f"{len(ROWS)} models x {seeds} seeds; a figure over fewer than {seeds} seeds says its n, a dash has none "
              "yet). The sweep resumes where it stopped: run the same command again (`python scripts/bench_beyond.py "
              "--stop-at HH:MM`); finished cells are skipped, an interrupted training continues from its checkpoint.", ""]
    else:
        L += ["To resume or extend it: run the same command again (`python scripts/bench_beyond.py --stop-at HH:MM`); "
              "finished cells are skipped, an interrupted training continues from its checkpoint.", ""]
    plan = " ".join(s.get("plan_options") or []) or "the defaults"
    envs = min(s.get("num_envs") or 0, s.get("episodes") or 0)
    L.append(f"- **models**: MLP-BC = `mlp-bc` ({s.get('mlp_steps')} steps, the recipe-v2 row); IQL = `mlp-iql` "
             f"({s.get('iql_steps')} steps); MTM = `small` with `model.critic=true`, `model.critic_updates="
             f"{s.get('critic_updates')}`" + "".join(f", `{item}`" for item in s.get("mtm_set") or [])
             + f" ({s.get('mtm_steps')} steps), one training for both MTM columns; training seed k = 0..{seeds - 1}")
    L.append(f"- **evaluation**: final checkpoint, {s.get('episodes')} episodes in {envs} envs (reset seeds "
             f"{s.get('eval_seed')}–{(s.get('eval_seed') or 0) + (s.get('episodes') or 1) - 1}); MLP-BC and IQL in "
             f"mode bc, MTM in modes rcbc and plan (plan options: {plan}; the policy's default view, its past actions "
             "hidden, since 2026-12-07); normalised score (the shared data's own references, as in recipe-v2), "
             "**mean ± std over training seeds**; env steps/s as measured, with other sweeps sharing the 2 cores")
    if cells:
        L.append(f"- **CPU**: {paths_text(cells)}; {sum(r.get('cell_cpu_s') or 0.0 for r in cells) / 3600:.1f} "
                 f"CPU-hours in the {len(cells)} finished cells")
    else:
        L.append("- **CPU**: no cell has finished yet (about 12-15 CPU-hours in all at one thread)")
    L.append(f"- **command**: `{settings_command(s)}`")
    L += ["", "| dataset | data mean | best episode | " + " | ".join(c[2] for c in COLUMNS) + " |",
          "|---|---:|---:|" + "---:|" * len(COLUMNS)]
    for ds in datasets:
        info = results.get("datasets", {}).get(ds, {})
        behaviour = [mean_of([info.get(k)], 1) for k in ("normalized_mean", "normalized_best_episode")]
        scores = [mean_spread([r["modes"].get(mode, {}).get("score") for r in grouped.get((ds, row), [])], seeds, "std")
                  for row, mode, _ in COLUMNS]
        L.append(f"| {ds} | " + " | ".join(behaviour + scores) + " |")
    L += ["", "Training CPU-minutes of each model (the training steps' own CPU time, cumulative over resumes, as the "
          "run's metrics.jsonl records it; mean over seeds) "
          f"and evaluation env steps/s of MTM's two modes ({envs} envs, {s.get('threads')} thread(s); mean over seeds):", "",
          "| dataset | " + " | ".join(r.label for r in ROWS.values()) + " | RCBC / plan env steps/s |",
          "|---|" + "---:|" * (len(ROWS) + 1)]
    for ds in datasets:
        minutes = [mean_of([training_cpu_minutes(r) for r in grouped.get((ds, row), [])], 1) for row in ROWS]
        rates = [mean_of([r["modes"].get(mode, {}).get("env_steps_per_s") for r in grouped.get((ds, "mtm"), [])], 0, True)
                 for mode in ("rcbc", "plan")]
        L.append(f"| {ds} | " + " | ".join(minutes) + f" | {rates[0]} / {rates[1]} |")
    if mixtures:
        L += ["", "Beside the table, data of a kind the recipe was not tuned on: a medium + expert mixture made as "
              "D4RL's medium-expert files are (both files' episodes trained on together, every window equally likely: "
              "`--data hopper-medium-v5.hdf5 --data hopper-expert-v5.hdf5`). Mean ± std over training seeds, then "
              "each seed's score (seed 0 / 1 / 2):", "",
              "| dataset | data mean | best episode | " + " | ".join(c[2] for c in COLUMNS) + " |",
              "|---|---:|---:|" + "---:|" * len(COLUMNS)]
        for ds in mixtures:
            info = results.get("datasets", {}).get(ds, {})
            behaviour = [mean_of([info.get(k)], 1) for k in ("normalized_mean", "normalized_best_episode")]
            cells_text = []
            for row, mode, _ in COLUMNS:
                by_seed = {r["seed"]: r["modes"].get(mode, {}).get("score") for r in grouped.get((ds, row), [])}
                scores = [v for v in by_seed.values() if v is not None]
                each = " / ".join("–" if by_seed.get(k) is None else f"{by_seed[k]:.1f}" for k in range(seeds))
                cells_text.append(mean_spread(scores, seeds, "std") + (f" ({each})" if len(scores) > 1 else ""))
            L.append(f"| {ds} | " + " | ".join(behaviour + cells_text) + " |")
    commands = example_commands(results)
    if commands:
        L += ["", "Each cell's commands (as recorded for the first cell of each model):", ""]
        L += [f"    {c}" for c in commands]
    L += ["", END]
    return "\n".join(L)


def write_outputs(results: dict, args) -> None:
    block = render(results, args.seeds)
    print(block)
    if not args.no_benchmarks:
        print(write_block(BENCHMARKS, BEGIN, END, block, HEADING))


# ------------------------------------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default=",".join([*DATASETS, *MIXTURES]),
                   help="comma-separated shared datasets (default: the six, then the mixture)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated: {', '.join(ROWS)}")
    p.add_argument("--seeds", type=int, default=SEEDS, help=f"training seeds 0..N-1 (default {SEEDS})")
    p.add_argument("--mlp-steps", type=int, default=config_steps("mlp-bc"), help="mlp-bc training steps (default: the config's)")
    p.add_argument("--iql-steps", type=int, default=config_steps("mlp-iql"), help="mlp-iql training steps (default: the config's)")
    p.add_argument("--mtm-steps", type=int, default=config_steps("small"), help="MTM training steps (default: small's)")
    p.add_argument("--critic-updates", type=int, default=CRITIC_UPDATES,
                   help=f"MTM: model.critic_updates, TD updates of its critic per step (default {CRITIC_UPDATES})")
    p.add_argument("--mtm-set", action="append", default=[], metavar="KEY=VALUE",
                   help="MTM: one more `mtm train --set` (repeatable)")
    p.add_argument("--plan-option", action="append", default=[], metavar="--plan-X=V",
                   help="one more `mtm eval` option of mode plan, written with = (repeatable), e.g. --plan-option=--plan-horizon=2")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes (default 20)")
    p.add_argument("--num-envs", type=int, default=10)
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    add_sweep_options(p, ROOT / "runs" / "bench" / "beyond", ROOT / "results" / "beyond_the_data.json",
                      "rebuild the tables from the results file")
    return p


def option_error(args) -> str | None:
    """The `error:` line for options the sweep cannot run with, or None."""
    bad = [r for r in args.rows.split(",") if r and r not in ROWS]
    if bad:
        return f"error: unknown row(s) {', '.join(bad)}; choose from {', '.join(ROWS)}"
    for item in args.mtm_set:
        key = item.split("=", 1)[0].strip()
        if "=" not in item:
            return f"error: --mtm-set {item!r} is not KEY=VALUE"
        if key in OWN_OPTIONS:
            own = OWN_OPTIONS[key]
            return f"error: --mtm-set {key} is set by the sweep itself" + (f"; use {own}" if own else "")
    try:
        load_config(RunConfig, resolve_config_path("small"), row_settings("mtm", args))
    except ConfigError as exc:
        return f"error: --mtm-set: {exc}"
    for option in args.plan_option:
        if not option.startswith("--plan-") or "=" not in option:
            return f"error: --plan-option {option!r} is not an option of mode plan written --plan-X=VALUE"
    return None


def main() -> int:
    args = build_parser().parse_args()
    error = option_error(args)
    if error is not None:
        print(error, file=sys.stderr)
        return 1
    datasets = [d for d in args.datasets.split(",") if d]
    rows = [r for r in args.rows.split(",") if r]
    if args.table_only:
        results = bench_common.read_json(args.results) or {}
        known = results.setdefault("datasets", {})
        known.update({ds: dataset_info(ds) for ds in [*DATASETS, *MIXTURES]
                      if ds not in known and all(path.exists() for path in data_files(ds))})
        write_outputs(results, args)
        return 0
    deadline = parse_stop_at(args.stop_at, now())
    env = command_env(args.threads)

    def done_line(key: str, rec: dict) -> str:
        scores = ", ".join(f"{mode} {m['score']:.1f}" for mode, m in rec["modes"].items() if m["score"] is not None)
        return f"cell {key}: {scores}; {rec['cell_cpu_s'] / 60:.1f} CPU-minutes"

    return run_sweep(args, settings_of(args, rows), deadline, DATA_DIR, datasets, dataset_info,
                     lambda present: cell_order(present, range(args.seeds), rows), lambda c: cell_key(*c),
                     lambda c, infos: run_cell(*c, args, env, deadline), done_line, lambda results: write_outputs(results, args),
                     partial_settings=True, files=data_files, stale=lambda rec: record_is_stale(rec, args))


if __name__ == "__main__":
    sys.exit(main())

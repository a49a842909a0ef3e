"""Heteromodal data at the paper's label budget (issue #26): the data-efficiency curve.

For each dataset (hopper-expert-v5, halfcheetah-expert-v5 from ../shared/datasets), each label
budget n (1, 2, 5 labelled episodes) and each seed k, this keeps actions on n whole episodes chosen
by k and drops them from every other episode, then trains three rows, all with the same number of
steps and training seed k:

    mlp-bc        `mlp-bc` config on the labelled episodes only    (data.only_with=[actions])
    mtm-labelled  `small` MTM on the labelled episodes only        (data.only_with=[actions])
    mtm-mixed     `small` MTM on labelled + state-only episodes    (the partly labelled file; half of
                  every batch from its labelled episodes, data.action_share=0.5)

Both MTM rows train with the mask mixture MTM_MASK (random-autoregressive and inverse-dynamics
masks, half each: the paper's heteromodal recipe), which the settings record.

and evaluates every **final** checkpoint for E episodes as a BC policy (`mtm eval --mode bc`, reset
seeds 0..E-1, normalised score); the MTM rows also get their inverse-dynamics error on the held-out
episodes of the complete file (`mtm eval --task id --data FULL`).

Which episodes are labelled: the training episodes of the file (the split every run uses,
data.val_fraction 0.1 with data.split_seed 0, so no labelled episode is ever held out) in a fixed
shuffled order, cut into blocks of 5 (the largest default budget); seed k labels the first n
episodes of block k. Different seeds label different episodes (disjoint while seeds x 5 fits in
the training episodes: 5 seeds use 25 of ~100), and a seed's budgets are nested (its 1 episode is
among its 2, its 2 among its 5). The partly labelled file (written with the package's own reader
and writer, like `mtm convert --drop`) has the complete file's episodes in the same order, so the
held-out split is the same episodes for every row.

A cell is one (dataset, budget, seed, row). Cells run in the order that fills the table soonest:
seed 0 of every budget and row on every dataset first (smallest budget first), then seed 1, and so
on. Every finished cell is a record in the results file (written under a lock, atomically), and a
cell with a record is never run again: run the same command to resume. An interrupted training
continues with `mtm train --resume`; an evaluation without its report is run again. With
`--stop-at HH:MM` (UTC) no cell starts after that time and a running command gets Ctrl-C (SIGINT)
at it: training saves a checkpoint and stops, so the next invocation continues it.

Layout:

    runs/bench/heteromodal-budget/<dataset>/b<n>/seed<k>/data.hdf5   the partly labelled file (git-ignored)
    runs/bench/heteromodal-budget/<dataset>/b<n>/seed<k>/<row>/       run directory, eval_bc.json, id.json
    results/heteromodal_budget.json                                   every finished cell, one record each
    BENCHMARKS.md, between <!-- heteromodal-budget:begin --> and <!-- heteromodal-budget:end -->: the table
    docs/images/heteromodal_budget.png                                score against labelled episodes

Usage:
  python scripts/bench_heteromodal.py                                  # 2 datasets x 3 budgets x 5 seeds x 3 rows
  python scripts/bench_heteromodal.py --stop-at 05:40                  # start no cell after 05:40 UTC
  python scripts/bench_heteromodal.py --datasets hopper-medium-v5 --seeds 3
  python scripts/bench_heteromodal.py --steps 50 --seeds 1 --budgets 1 --episodes 2 --work /tmp/h --results /tmp/h.json --no-benchmarks
  python scripts/bench_heteromodal.py --dry-run                        # print the commands
  python scripts/bench_heteromodal.py --table-only                     # rebuild table and plot from the results
"""

from __future__ import annotations

import bench_common  # first: threads and OpenMP waiting, as under the mtm command

import argparse
import dataclasses
import datetime
import math
import statistics
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from mtm.checkpoint import step_dir
from mtm.data.formats import open_dataset
from mtm.data.formats.native import EpisodeWriter
from mtm.data.trajectories import Trajectories, load_trajectories
from mtm.hardware import PRECISIONS
from mtm.run_metadata import RunMetadata
from sweep_cells import (MTM, ROOT, Commands, add_sweep_options, behaviour_scores, command_env, mean_spread, now,
                         parse_stop_at, rel, run_sweep, write_block)

DATA_DIR = ROOT.parent / "shared" / "datasets"
BENCHMARKS = ROOT / "BENCHMARKS.md"
IMAGES = ROOT / "docs" / "images"
PLOT = IMAGES / "heteromodal_budget.png"
QUALITY = ROOT / "results" / "quality.json"  # the full-data MLP-BC reference line of the plot
QUALITY_TAG = "recipe-v2"
BEGIN, END = "<!-- heteromodal-budget:begin -->", "<!-- heteromodal-budget:end -->"
DATASETS = ["hopper-expert-v5", "halfcheetah-expert-v5"]
BUDGETS = [1, 2, 5]
SEEDS = 5
BLOCK = 5  # labelled episodes set aside per seed: the largest default budget, so budgets nest
SUBSET_SEED = 0  # the fixed shuffle of the training episodes that the blocks are cut from
VAL_FRACTION, SPLIT_SEED = 0.1, 0  # the held-out split of every run (the configs' own), passed explicitly
# row -> (config, only the labelled episodes, column of the table)
ROWS = {
    "mlp-bc": ("mlp-bc", True, "MLP-BC"),
    "mtm-labelled": ("small", True, "MTM (labelled)"),
    "mtm-mixed": ("small", False, "MTM (labelled + state-only)"),
}
# Both MTM rows train with an inverse-dynamics mask beside the random-autoregressive one, as the
# paper's heteromodal MTM did. Measured on seed 0 (BENCHMARKS.md, "What the first cells' failures
# were"): with random_autoregressive alone, MTM on one labelled hopper episode + state-only ones fell
# within ~190 steps at every kept checkpoint (19-20 at steps 5000-7000), with this mixture it scored
# 71 at step 5000. The recipe is part of the settings, so results made with another are refused.
MTM_MASK = "random_autoregressive:0.5,inverse_dynamics:0.5"
# The mixed row draws half of every batch from the labelled episodes: one labelled episode among a
# hundred would otherwise fill 1 % of a batch.
ROW_SETTINGS = {"mtm-labelled": [f"train.mask={MTM_MASK}"],
                "mtm-mixed": ["data.action_share=0.5", f"train.mask={MTM_MASK}"]}
ID_ROWS = ("mtm-labelled", "mtm-mixed")


# ------------------------------------------------------------------------------ which episodes


def training_episodes(data: Trajectories, val_fraction: float = VAL_FRACTION, split_seed: int = SPLIT_SEED) -> list[int]:
    """The file positions of the episodes a run on `data` trains on: `Trajectories.split`'s own choice."""
    train, _ = data.split(val_fraction, split_seed)
    return [int(i) for i in train.episode_ids]


def labelled_subset(train_episodes: Sequence[int], budget: int, seed: int, block: int = BLOCK) -> list[int]:
    """Seed `seed`'s `budget` labelled episodes (sorted file positions): the first `budget` of block
    `seed` of a fixed shuffle of `train_episodes`. Blocks of different seeds are disjoint while
    (seed + 1) * block <= len(train_episodes); past that they wrap around (they still differ, but may
    share episodes). A budget above the block takes a block of its own size."""
    pool = np.random.default_rng(SUBSET_SEED).permutation(np.asarray(train_episodes, np.int64))
    if not 1 <= budget <= len(pool):
        raise ValueError(f"a budget of {budget} labelled episodes needs 1..{len(pool)} training episodes")
    stride = max(block, budget)
    start = seed * stride
    return sorted(int(pool[(start + i) % len(pool)]) for i in range(budget))


def write_partial(full: Path, dst: Path, labelled: Sequence[int]) -> int:
    """The complete file's episodes in its order, actions kept on `labelled` (file positions) only;
    the number of steps written. Written as DST.partial and renamed (EpisodeWriter), so a kill
    leaves no half file."""
    keep = set(labelled)
    with open_dataset(full) as source:
        info = dataclasses.replace(source.info, extra={**source.info.extra, "labelled_episodes": sorted(keep)})
        with EpisodeWriter(dst, info, overwrite=True) as writer:
            for i, episode in enumerate(source):
                writer.add(episode if i in keep else dataclasses.replace(episode, actions=None))
    return writer.num_steps


# ------------------------------------------------------------------------------------------ cells


def cell_key(ds: str, budget: int, seed: int, row: str) -> str:
    return f"{ds}/b{budget}/seed{seed}/{row}"


def cell_order(datasets: Sequence[str], budgets: Sequence[int], seeds: Sequence[int],
               rows: Sequence[str]) -> Iterator[tuple[str, int, int, str]]:
    """(dataset, budget, seed, row), the most informative first: every budget and row of seed 0 on
    every dataset (smallest budget first, the datasets side by side), then seed 1, ..."""
    for seed in seeds:
        for budget in sorted(budgets):
            for ds in datasets:
                for row in rows:
                    yield ds, budget, seed, row


def final_checkpoint(run_dir: Path, steps: int) -> Path:
    return step_dir(run_dir, steps)


def train_command(row: str, data: Path, run_dir: Path, seed: int, args) -> list:
    config, labelled_only, _ = ROWS[row]
    if (ROOT / run_dir / "checkpoints" / "last").exists():
        return [MTM, "train", "--resume", run_dir, "--set", f"train.steps={args.steps}", "--no-progress"]
    cmd = [MTM, "train", "--config", config, "--data", data, "--run-dir", run_dir,
           "--set", f"train.seed={seed}", "--set", f"train.steps={args.steps}", "--set", "train.device=cpu",
           "--set", f"train.precision={args.precision}", "--set", f"data.val_fraction={VAL_FRACTION}",
           "--set", f"data.split_seed={SPLIT_SEED}", "--no-progress"]
    if labelled_only:
        cmd += ["--set", "data.only_with=[actions]"]
    for item in ROW_SETTINGS.get(row, []):
        cmd += ["--set", item]
    if (ROOT / run_dir).exists():
        cmd.append("--overwrite")
    return cmd


def run_cell(ds: str, budget: int, seed: int, row: str, info: dict, args, env: dict[str, str],
             deadline: datetime.datetime | None) -> dict | None:
    """Train and evaluate one cell (skipping what is already on disk); its record, or None when it
    did not finish (a failure, or the deadline)."""
    full = rel(DATA_DIR / f"{ds}.hdf5")
    work = rel(args.work / ds / f"b{budget}" / f"seed{seed}")
    labelled = labelled_subset(info["train_episodes"], budget, seed)
    partial = work / "data.hdf5"
    if not (ROOT / partial).exists():
        print(f"$ # write {partial}: actions on episodes {labelled} only", flush=True)
        if not args.dry_run:
            (ROOT / work).mkdir(parents=True, exist_ok=True)
            write_partial(ROOT / full, ROOT / partial, labelled)
    run_dir = work / row
    cmds = Commands(ROOT / run_dir.parent / f"{row}.steps.json", env, deadline, args.dry_run)
    ckpt = final_checkpoint(run_dir, args.steps)
    if not (ROOT / ckpt).exists() and not cmds.run("train", train_command(row, partial, run_dir, seed, args)):
        return None
    report = run_dir / "eval_bc.json"
    if not (ROOT / report).exists():
        cmd = [MTM, "eval", "--checkpoint", ckpt, "--episodes", str(args.episodes), "--num-envs",
               str(min(args.num_envs, args.episodes)), "--seed", "0", "--mode", "bc", "--device", "cpu",
               "--no-progress", "--output", report]
        # The table's cells were evaluated with the action history shown, the default until 2026-12-07:
        # later cells too, so that they compare (an MLP has no history to show).
        cmd.append("--action-history")
        if not cmds.run("eval_bc", cmd):
            return None
    predict = run_dir / "id.json"
    if row in ID_ROWS and not (ROOT / predict).exists():
        if not cmds.run("id", [MTM, "eval", "--checkpoint", ckpt, "--task", "id", "--data", full, "--device", "cpu",
                               "--no-progress", "--output", predict]):
            return None
    if args.dry_run:
        return None
    bc = bench_common.read_json(ROOT / report) or {}
    id_report = (bench_common.read_json(ROOT / predict) or {}).get("tasks", {}).get("id", {})
    metadata = bench_common.read_json(ROOT / ckpt / "metadata.json")
    split = RunMetadata.from_dict(metadata).split if metadata is not None else {}
    runtime = (metadata or {}).get("runtime", {})
    return {
        "dataset": ds, "budget": budget, "seed": seed, "row": row, "finished": now().isoformat(timespec="seconds"),
        "labelled_episodes": labelled, "labelled_transitions": int(sum(info["lengths"][i] for i in labelled)),
        "train_episodes_with_actions": split.get("train_episodes_with", {}).get("actions", split.get("train_episodes")),
        "score": bc.get("normalized_score_mean"), "score_episode_std": bc.get("normalized_score_std"),
        "return": bc.get("return_mean"), "id_mse": id_report.get("mse"),
        "train_cpu_s": cmds.total("train", "cpu_s"), "train_wall_s": cmds.total("train", "wall_s"),
        "train_attempts": len(cmds.done.get("train", [])),
        "cpu": runtime.get("cpu"), "train_precision": runtime.get("precision", {}).get("dtype"),
        "eval_cpu_s": cmds.total("eval_bc", "cpu_s"), "id_cpu_s": cmds.total("id", "cpu_s"),
        "cell_cpu_s": round(sum(cmds.total(n, "cpu_s") or 0.0 for n in ("train", "eval_bc", "id")), 1),
        "commands": cmds.first_commands(),
    }


def dataset_info(ds: str) -> dict:
    """What the table and the subsets need of a complete file: its episodes' lengths, the training
    split, the behaviour's normalised mean and best episode."""
    data = load_trajectories(DATA_DIR / f"{ds}.hdf5")
    return {"episodes": int(data.num_episodes), "lengths": [int(n) for n in data.lengths],
            "train_episodes": training_episodes(data), **behaviour_scores(data)}


def settings_of(args) -> dict:
    return {"steps": args.steps, "episodes": args.episodes, "precision": args.precision, "threads": args.threads,
            "block": BLOCK, "subset_seed": SUBSET_SEED, "val_fraction": VAL_FRACTION, "split_seed": SPLIT_SEED,
            "mtm_mask": MTM_MASK}


# ---------------------------------------------------------------------------------- table and plot


def mean_se(values: Sequence[float], seeds: int = SEEDS) -> str:
    """mean ± standard error over seeds; n is named when fewer than `seeds` are in."""
    return mean_spread(values, seeds, "se")


def transitions_text(values: Sequence[int]) -> str:
    if not values:
        return "–"
    lo, hi = min(values), max(values)
    if lo == hi:
        return f"{lo:,}"
    return f"{statistics.mean(values):,.0f} ({lo:,}–{hi:,})"


def table_cells(results: dict) -> dict[tuple[str, int], dict[str, list[dict]]]:
    """{(dataset, budget): {row: [records by seed]}}, datasets and budgets in the sweep's order."""
    grouped: dict[tuple[str, int], dict[str, list[dict]]] = {}
    records = sorted(results.get("cells", {}).values(), key=lambda r: (r["budget"], r["seed"]))
    order = {ds: i for i, ds in enumerate(DATASETS)}
    for rec in sorted(records, key=lambda r: (order.get(r["dataset"], len(order)), r["dataset"], r["budget"], r["seed"])):
        grouped.setdefault((rec["dataset"], rec["budget"]), {}).setdefault(rec["row"], []).append(rec)
    return grouped


def progress(results: dict, seeds: int = SEEDS) -> tuple[int, int, set[str], set[int]]:
    """(finished cells, cells of the sweep, its datasets, its budgets): every dataset of the results
    file, the default budgets and any other measured, every row and seed."""
    cells = results.get("cells", {})
    datasets = set(results.get("datasets", {})) | {r["dataset"] for r in cells.values()}
    budgets = set(BUDGETS) | {r["budget"] for r in cells.values()}
    return len(cells), len(datasets) * len(budgets) * len(ROWS) * seeds, datasets, budgets


def render(results: dict, seeds: int = SEEDS) -> str:
    s = results.get("settings", {})
    cells = results.get("cells", {})
    done, expected, datasets, budgets = progress(results, seeds)
    partial = done < expected
    L = [BEGIN, "", "Generated by `scripts/bench_heteromodal.py` from `results/heteromodal_budget.json` — do not "
         "edit by hand (`python scripts/bench_heteromodal.py --table-only` rebuilds it and the plot).", ""]
    if partial:
        L += [f"**Partial: {done} of the sweep's {expected} cells have finished** ({len(datasets)} datasets x "
              f"{len(budgets)} budgets x {len(ROWS)} models x {seeds} seeds; the sweep is resumable and the table fills "
              f"as cells finish). A figure over fewer than {seeds} seeds says its n.", ""]
    cpu = sum(r.get("cell_cpu_s") or 0.0 for r in cells.values())
    recipe = " (the `small` recipe's own; `mlp-bc` at the same steps)" if s.get("steps") == 7000 else ""
    L.append(f"- **budget**: {s.get('steps')} training steps for every row{recipe}, batch 256, precision {s.get('precision')}, CPU, OMP_NUM_THREADS={s.get('threads')}; "
             f"seed k = training seed and labelled subset")
    L.append(f"- **labelled subset**: whole episodes from the training split (val_fraction {s.get('val_fraction')}, "
             f"split seed {s.get('split_seed')}); seed k labels the first n of its own block of {s.get('block')} "
             f"(disjoint across seeds, nested across budgets); every other episode keeps its states only")
    L.append(f"- **evaluation**: final checkpoint, {s.get('episodes')} episodes per model (reset seeds 0–"
             f"{(s.get('episodes') or 1) - 1}), BC mode; normalised score, mean ± standard error over seeds")
    paths = Counter((r.get("cpu") or "?", r.get("train_precision") or "?") for r in cells.values())
    where = ", ".join(f"{path} with {dtype} training ({n} cell{'s' if n != 1 else ''})"
                      for (path, dtype), n in sorted(paths.items(), key=lambda item: -item[1]))
    L.append(f"- **CPU time**: {cpu / 3600:.1f} CPU-hours in the {done} finished cells; CPU path: {where}")
    L.append("")
    L.append("| dataset | labelled episodes | labelled transitions | " + " | ".join(v[2] for v in ROWS.values()) + " |")
    L.append("|---|---:|---:|" + "---:|" * len(ROWS))
    for (ds, budget), rows in table_cells(results).items():
        by_seed = {r["seed"]: r["labelled_transitions"] for recs in rows.values() for r in recs}
        scores = [mean_se([r["score"] for r in rows.get(row, [])], seeds) for row in ROWS]
        L.append(f"| {ds} | {budget} | {transitions_text(list(by_seed.values()))} | " + " | ".join(scores) + " |")
    L += ["", "![score against labelled episodes](docs/images/heteromodal_budget.png)", "", END]
    return "\n".join(L)


def full_data_mlp(ds: str) -> float | None:
    """MLP-BC trained on every episode of `ds` (the quality table's shipped recipe): mean final score."""
    quality = bench_common.read_json(QUALITY) or {}
    scores = []
    for key, rec in quality.get("runs", {}).items():
        if key.startswith(f"{QUALITY_TAG}/{ds}/mlp-bc/") and rec.get("points"):
            last = rec["points"][max(rec["points"], key=int)]
            if "bc" in last:
                scores.append(last["bc"]["score"])
    return statistics.mean(scores) if scores else None


def plot(results: dict, path: Path | None = None, seeds: int = SEEDS) -> Path | None:
    """One panel per dataset: normalised score against labelled episodes, a line per row (mean over
    seeds, standard error shaded, every seed a dot)."""
    grouped = table_cells(results)
    if not grouped:
        return None
    plt = bench_common.pyplot()
    if plt is None:
        return None

    path = path or PLOT
    # A panel per dataset of the sweep, finished cells or not, and the same axes whatever is in.
    named = set(results.get("datasets", {})) | {ds for ds, _ in grouped}
    datasets = [ds for ds in DATASETS if ds in named] + sorted(named - set(DATASETS))
    all_budgets = sorted(set(BUDGETS) | {b for _, b in grouped})
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(4.8 * len(datasets), 9.6), 4.0), squeeze=False)
    colours = {"mlp-bc": "tab:grey", "mtm-labelled": "tab:blue", "mtm-mixed": "tab:red"}
    for ax, ds in zip(axes.flat, datasets):
        budgets = sorted(b for d, b in grouped if d == ds)
        if not budgets:
            ax.text(0.5, 0.5, "no cell finished yet", transform=ax.transAxes, ha="center", va="center", color="grey")
        seeds_seen: list[int] = []
        for row, (_, _, label) in ROWS.items():
            xs, ys, ses, ns = [], [], [], []
            for b in budgets:
                vals = [r["score"] for r in grouped[(ds, b)].get(row, []) if r["score"] is not None]
                if not vals:
                    continue
                xs.append(b)
                ys.append(statistics.mean(vals))
                ses.append(statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else 0.0)
                ns.append(len(vals))
                ax.scatter([b] * len(vals), vals, s=9, color=colours[row], alpha=0.35, linewidths=0)
            if not xs:
                continue
            seeds_seen.extend(ns)
            ax.plot(xs, ys, marker="o", markersize=4, color=colours[row], label=label)
            ax.fill_between(xs, [y - e for y, e in zip(ys, ses)], [y + e for y, e in zip(ys, ses)],
                            color=colours[row], alpha=0.15)
        info = results.get("datasets", {}).get(ds, {})
        if info.get("normalized_mean") is not None:
            ax.axhline(info["normalized_mean"], color="black", linestyle=":", linewidth=1, label="data mean")
        ref = full_data_mlp(ds)
        if ref is not None:
            ax.axhline(ref, color="tab:grey", linestyle="--", linewidth=1,
                       label=f"MLP-BC on every episode (quality table, {QUALITY_TAG})")
        ax.set_xscale("log")
        ax.set_xlim(all_budgets[0] / 1.3, all_budgets[-1] * 1.3)
        ax.set_xticks(all_budgets)
        ax.set_xticklabels([str(b) for b in all_budgets])
        ax.minorticks_off()
        low, high = ax.get_ylim()
        ax.set_ylim(min(0.0, low), max(115.0, high))  # normalised scores: 0 = random, 100 = the reference expert
        lo, hi = min(seeds_seen, default=0), max(seeds_seen, default=0)
        ax.set_title(f"{ds} (seeds per point: {lo if lo == hi else f'{lo}–{hi}'})", fontsize=10)
        ax.set_xlabel("labelled episodes (log scale)")
        ax.set_ylabel("normalised score (final checkpoint)")
        ax.grid(alpha=0.3)
    handles: dict = {}
    for ax in axes.flat:  # every line once, whichever panel has it
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=3, fontsize=8, frameon=False)
    done, expected, _, _ = progress(results, seeds)
    fig.suptitle("Heteromodal label budget: mean ± standard error over seeds (shaded), one dot per seed"
                 + (f" — PARTIAL: {done} of {expected} cells" if done < expected else ""), fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(results: dict, args) -> None:
    block = render(results, args.seeds)
    print(block)
    if args.no_benchmarks:
        return
    print(write_block(BENCHMARKS, BEGIN, END, block))
    path = plot(results, seeds=args.seeds)
    if path:
        print(f"plot written to {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated shared datasets")
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS)), help="labelled episodes, comma-separated (default 1,2,5)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated: {', '.join(ROWS)}")
    p.add_argument("--seeds", type=int, default=SEEDS, help=f"seeds 0..N-1 (training seed and labelled subset; default {SEEDS})")
    p.add_argument("--steps", type=int, default=7000, help="training steps, every row (default 7000, the small recipe's)")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes (default 20)")
    p.add_argument("--num-envs", type=int, default=10)
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    add_sweep_options(p, ROOT / "runs" / "bench" / "heteromodal-budget", ROOT / "results" / "heteromodal_budget.json",
                      "rebuild the table and plot from the results file")
    args = p.parse_args()
    datasets = [d for d in args.datasets.split(",") if d]
    budgets = [int(b) for b in args.budgets.split(",") if b]
    rows = [r for r in args.rows.split(",") if r]
    bad = [r for r in rows if r not in ROWS]
    if bad:
        print(f"error: unknown row(s) {bad}; choose from {', '.join(ROWS)}", file=sys.stderr)
        return 1
    if args.table_only:
        write_outputs(bench_common.read_json(args.results) or {}, args)
        return 0
    deadline = parse_stop_at(args.stop_at, now())
    env = command_env(args.threads)
    return run_sweep(args, settings_of(args), deadline, DATA_DIR, datasets, dataset_info,
                     lambda present: cell_order(present, budgets, range(args.seeds), rows), lambda c: cell_key(*c),
                     lambda c, infos: run_cell(*c, infos[c[0]], args, env, deadline),
                     lambda key, rec: f"cell {key}: score {rec['score']:.1f}, {rec['cell_cpu_s'] / 60:.1f} CPU-minutes",
                     lambda results: write_outputs(results, args))


if __name__ == "__main__":
    sys.exit(main())

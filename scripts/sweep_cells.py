"""What the resumable benchmark sweeps share (scripts/bench_heteromodal.py, scripts/bench_beyond.py):
a sweep is a grid of cells (one trained model and its evaluations each), run one by one through
the mtm command line, that fills a table in BENCHMARKS.md as cells finish and survives being
stopped at any point.

- Every finished cell is a record in one results file, written under its lock and atomically
  (update_results); a cell with a record is never run again, so running the same command resumes.
- The settings of a sweep are stored in its results file; an invocation with other settings is
  refused (settings_error) rather than mixing cells made two ways into one table.
- `--stop-at HH:MM` (UTC): no cell starts after it, and a running command gets Ctrl-C (SIGINT) at
  it (Commands): training saves a checkpoint and stops, and `mtm train --resume` continues it.
- Commands keeps every attempt's command line, exit code, wall and CPU seconds beside the run, so a
  cell's cost adds up over the sessions it took.
- Ctrl-C or SIGTERM to a sweep (`pkill -TERM -f scripts/bench_X.py`) reaches its running command as
  one SIGINT (bench_common.run_command): a training saves a checkpoint and stops, the attempt is
  kept, and the sweep exits (130 / 143); run the same command to resume.
"""

from __future__ import annotations

import bench_common  # first: threads and OpenMP waiting, as under the mtm command

import argparse
import datetime
import json
import math
import os
import re
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from bench_common import read_json, replace_block
from envs.references import normalized_score
from mtm.io import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent  # every command of a sweep runs here
MTM = ".venv/bin/mtm" if (ROOT / ".venv" / "bin" / "mtm").exists() else "mtm"
Cell = TypeVar("Cell")


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def parse_stop_at(text: str | None, start: datetime.datetime) -> datetime.datetime | None:
    """HH:MM UTC today, or tomorrow when that time has already passed at `start`."""
    if not text:
        return None
    hh, mm = map(int, text.split(":"))
    deadline = start.replace(hour=hh, minute=mm, second=0, microsecond=0)
    return deadline if deadline > start else deadline + datetime.timedelta(days=1)


def command_env(threads: int) -> dict[str, str]:
    """The environment every command of a sweep runs with: `threads` threads, OpenMP waiting passively."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}


def rel(path: Path) -> Path:
    """`path` relative to the repository when it lies inside it: the commands run there, and the
    recorded command lines stay the same on every checkout."""
    path = Path(path).resolve()
    return Path(os.path.relpath(path, ROOT)) if path.is_relative_to(ROOT.parent) else path


# The deadline's wrapper as Commands.run puts it before a command (without --foreground in older records).
_DEADLINE_PREFIX = re.compile(r"timeout (--foreground )?--signal=INT --kill-after=\d+ \d+ ")


def without_deadline(command: str) -> str:
    """A recorded command line without the deadline's `timeout` wrapper: the command a user would run."""
    return _DEADLINE_PREFIX.sub("", command)


class Commands:
    """Runs one cell's commands, each cut off by SIGINT at the deadline, and keeps every attempt's
    command line, exit code, wall and CPU seconds in `record` (a resumed training adds up its attempts)."""

    def __init__(self, record: Path, env: dict[str, str], deadline: datetime.datetime | None, dry_run: bool) -> None:
        self.record, self.env, self.deadline, self.dry_run = record, env, deadline, dry_run
        self.done = (read_json(record) or {}) if not dry_run else {}

    def past_deadline(self) -> bool:
        return self.deadline is not None and now() >= self.deadline

    def run(self, name: str, cmd: list) -> bool:
        if self.past_deadline():
            return False
        if self.deadline is not None:
            left = int((self.deadline - now()).total_seconds())
            # --foreground: timeout signals the command alone. Without it, it also signals its process
            # group, the command included, so the command could get two SIGINTs, the second of which
            # stops `mtm train` without saving (a race: the two coalesce only when both arrive before
            # the command's handler runs).
            cmd = ["timeout", "--foreground", "--signal=INT", "--kill-after=600", str(max(left, 1)), *cmd]
        try:
            code, _, timing = bench_common.run_command(cmd, self.env, ROOT, dry_run=self.dry_run)
        except bench_common.Stopped as stop:  # Ctrl-C / SIGTERM: the attempt counts, then the sweep stops
            self.record_attempt(name, stop.timing, stop.returncode)
            raise
        if self.dry_run:
            return True
        self.record_attempt(name, timing, code)
        return code == 0

    def record_attempt(self, name: str, timing: dict, returncode: int) -> None:
        self.done.setdefault(name, []).append({**timing, "returncode": returncode})
        self.save()

    def save(self) -> None:
        """Write every attempt so far to the record (atomically)."""
        self.record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.record, json.dumps(self.done, indent=1) + "\n")

    def total(self, name: str, key: str) -> float | None:
        attempts = self.done.get(name, [])
        return round(sum(a.get(key, 0.0) for a in attempts), 1) if attempts else None

    def first_commands(self) -> dict[str, str]:
        """{name: the command line of its first attempt}: what a cell ran, for its record."""
        return {name: attempts[0]["command"] for name, attempts in self.done.items()}


# ------------------------------------------------------------------------------ training cost


def train_steps_cpu_s(run_dir: Path) -> float | None:
    """The training steps' own CPU seconds (the last charts/train_cpu_s of metrics.jsonl, cumulative
    over resumes): the recipe-v2 table's measure, without start-up, data loading and saving."""
    last = None
    try:
        for line in open(run_dir / "metrics.jsonl"):
            row = json.loads(line)
            last = row.get("charts/train_cpu_s", last)
    except (OSError, ValueError):
        return None
    return None if last is None else round(last, 1)


def training_cpu_minutes(rec: dict) -> float | None:
    """A cell's training CPU-minutes: its steps' own CPU time from the run's metrics (cumulative over every
    resume, whoever ran it), else the CPU time of the train commands the sweep logged. The command log
    misses attempts made before it existed (some cells of bench_beyond record a third of their steps' time: a sweep
    killed with its command running never logged that attempt)."""
    seconds = rec.get("train_steps_cpu_s")
    seconds = rec.get("train_cpu_s") if seconds is None else seconds
    return None if seconds is None else seconds / 60


# ------------------------------------------------------------------------------ the results file


def update_results(path: Path, update: Callable[[dict], Any]) -> dict:
    """Apply `update` to the shared results file under its lock (bench_common) and return it as written."""
    out: dict = {}

    def apply(data: dict) -> None:
        update(data)
        out.update(data)
    bench_common.update_json_file(path, apply)
    return out


def settings_error(path: Path, settings: dict, partial: bool = False) -> str | None:
    """The `error:` line refusing a sweep whose settings differ from those `path` was made with
    (naming each differing setting), or None when they agree or the file holds none yet. With
    `partial`, only the settings both name are compared (a sweep of some rows records only
    theirs; start_results adds the others when their rows first run)."""
    earlier = (read_json(path) or {}).get("settings")
    if earlier is None or earlier == settings:
        return None
    missing = "(unset)"
    keys = set(earlier) & set(settings) if partial else set(earlier) | set(settings)
    diffs = [f"{key} {earlier.get(key, missing)!r} there, {settings.get(key, missing)!r} now"
             for key in sorted(keys) if earlier.get(key, missing) != settings.get(key, missing)]
    if not diffs:
        return None
    return (f"error: {path} holds cells made with other settings ({'; '.join(diffs)}); give this sweep its own "
            f"--results and --work")


def start_results(path: Path, settings: dict, datasets: dict, dry_run: bool) -> dict:
    """The results file as it is, with the sweep's settings (kept where they are already in) and
    what it knows of its `datasets` written into it first; a dry run writes nothing."""
    if dry_run:
        return read_json(path) or {}
    def update(r: dict) -> None:
        kept = r.setdefault("settings", {})
        kept.update({k: v for k, v in settings.items() if k not in kept})  # those of rows run for the first time
        r.setdefault("datasets", {}).update(datasets)
    return update_results(path, update)


def pending_cells(results: dict, order: Sequence[Cell], key: Callable[[Cell], str],
                  stale: Callable[[dict], bool] | None = None) -> list[Cell]:
    """The cells of `order` that have no record yet, or whose record `stale` says is out of date (it
    is run again, redoing only what is out of date, and its record replaced): a finished, current
    cell is never run again."""
    done = results.get("cells", {})
    return [c for c in order if key(c) not in done or (stale is not None and stale(done[key(c)]))]


def run_cells(todo: Iterable[Cell], run: Callable[[Cell], dict | None], key: Callable[[Cell], str],
              results: Path, deadline: datetime.datetime | None, stop_at: str | None,
              done_line: Callable[[str, dict], str]) -> None:
    """Run the cells of `todo` in turn, none started after the deadline; each record `run` returns
    (None: the cell did not finish) goes into the results file at once, under `key`."""
    for cell in todo:
        if deadline is not None and now() >= deadline:
            print(f"stopped at the deadline ({stop_at} UTC); run the same command to resume", flush=True)
            break
        record = run(cell)
        if record is None:
            continue
        name = key(cell)
        update_results(results, lambda r: r.setdefault("cells", {}).__setitem__(name, record))
        print(done_line(name, record), flush=True)


def run_sweep(args, settings: dict, deadline: datetime.datetime | None, data_dir: Path, datasets: Sequence[str],
              dataset_info: Callable[[str], dict], order: Callable[[list[str]], Iterable[Cell]],
              key: Callable[[Cell], str], run: Callable[[Cell, dict], dict | None],
              done_line: Callable[[str, dict], str], write: Callable[[dict], None], partial_settings: bool = False,
              stale: Callable[[dict], bool] | None = None, files: Callable[[str], Sequence[Path]] | None = None) -> int:
    """A sweep's main part, its exit code: refuse other settings (unless a dry run), record the
    settings and what `dataset_info` says of each dataset present in `data_dir`, run every cell of
    `order(present datasets)` that has no record yet (`run(cell, infos)`), then `write` the tables
    from the results file (not on a dry run). `args`: the sweep options (add_sweep_options)."""
    error = settings_error(args.results, settings, partial=partial_settings)
    if error is not None and not args.dry_run:
        print(error, file=sys.stderr)
        return 1
    present = present_datasets(data_dir, datasets, files)
    if not present:
        return 0
    infos = {ds: dataset_info(ds) for ds in present}
    results = start_results(args.results, settings, infos, args.dry_run)
    todo = pending_cells(results, list(order(present)), key, stale)
    print(f"{len(todo)} cells to run" + (f", none started after {deadline:%Y-%m-%d %H:%M} UTC" if deadline else ""), flush=True)
    run_cells(todo, lambda cell: run(cell, infos), key, args.results, deadline, args.stop_at, done_line)
    if not args.dry_run:
        write(read_json(args.results) or {})
    return 0


def present_datasets(data_dir: Path, datasets: Sequence[str],
                     files: Callable[[str], Sequence[Path]] | None = None) -> list[str]:
    """The datasets of `datasets` whose files (`files(ds)`, default the one file data_dir/ds.hdf5)
    are all there, saying which are skipped."""
    files = files or (lambda ds: [data_dir / f"{ds}.hdf5"])
    present = []
    for ds in datasets:
        missing = [str(f) for f in files(ds) if not Path(f).exists()]
        if missing:
            print(f"skipping {ds}: {', '.join(missing)} absent (shared datasets are for developers)")
        else:
            present.append(ds)
    return present


def behaviour_scores(data, *more) -> dict:
    """The behaviour in a dataset (Trajectories; with `more`, the episodes of several files of one
    task taken together), normalised by the first file's references: the mean over its episodes and
    its best episode (the bar a policy 'better than its data' clears)."""
    returns = np.concatenate([np.asarray(d.episode_returns(), dtype=float) for d in (data, *more)])
    lo, hi = data.info.ref_min_score, data.info.ref_max_score
    return {"normalized_mean": normalized_score(float(np.mean(returns)), lo, hi),
            "normalized_best_episode": normalized_score(float(np.max(returns)), lo, hi)}


# ------------------------------------------------------------------------------ tables


def mean_spread(values: Sequence[float | None], seeds: int, spread: str = "se") -> str:
    """mean ± spread over seeds, `spread` "se" (standard error) or "std" (sample std); n is named
    when fewer than `seeds` are in, and a dash stands for none."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    n = len(values)
    mean = statistics.mean(values)
    if n == 1:
        return f"{mean:.1f} (n=1)"
    width = statistics.stdev(values) / (math.sqrt(n) if spread == "se" else 1.0)
    return f"{mean:.1f} ± {width:.1f}" + (f" (n={n})" if n < seeds else "")


def joined(values) -> str:
    """The distinct values found, ' / '-separated; a dash where there are none (a table's CPU paths, precisions)."""
    found = sorted({str(v) for v in values if v is not None})
    return " / ".join(found) or "–"


def write_block(path: Path, begin: str, end: str, block: str, heading: str | None = None) -> str:
    """Put `block` (which carries the markers) between the `begin` and `end` markers of `path`
    (BENCHMARKS.md); where they are absent and a `heading` is given, a new section of that name at
    the end of the file. What happened, as a line to print."""
    if replace_block(path, begin, end, block):
        return f"table written to {path.name}"
    if heading is None:
        return f"{path.name} has no {begin} ... {end} markers; the table is above"
    atomic_write_text(path, path.read_text().rstrip("\n") + f"\n\n## {heading}\n\n{block}\n")
    return f"table written to {path.name}, in a new section '{heading}' at its end"


# ------------------------------------------------------------------------------ the command line


def add_sweep_options(p: argparse.ArgumentParser, work: Path, results: Path, table_only: str) -> None:
    """The options of every sweep: threads, the deadline, where runs and results go, dry run and
    rebuilding the table (`table_only`: its help)."""
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every command (default 1)")
    p.add_argument("--stop-at", default=None, metavar="HH:MM",
                   help="UTC: start no cell after it, and Ctrl-C a running command at it (training saves and resumes next time)")
    p.add_argument("--work", type=Path, default=work, help="run folders")
    p.add_argument("--results", type=Path, default=results)
    p.add_argument("--no-benchmarks", action="store_true", help="leave BENCHMARKS.md (and any plot) alone")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--table-only", action="store_true", help=table_only)

"""Benchmark the training data path: D4RL file -> Trajectories -> windows on a device.

Builds a Hopper-like D4RL-layout file (1M transitions by default, observations 11-d, actions
3-d, episodes of up to 1000 steps, about a third ended early by a terminal, the last one cut
short like a file-size limit would: bench_common.write_hopper_like), then times each step with
bench_common.median_time (medians of --repeats; on CUDA bracketed by torch.cuda.synchronize()):

  inspect   summarize(open_dataset(path)): what `mtm inspect` computes (episodes, returns, lengths)
  load      load_trajectories(path): open, read, build the arrays and returns-to-go
  split     Trajectories.split(0.05, seed)
  stats     train.stats()
  sampler   WindowSampler(train, L) construction (includes the copy to --device)
  sample    one batch of --batch windows of L steps (mean over --batches batches; median of repeats)

Usage:
  python scripts/bench_data.py                        # temp file, CPU
  python scripts/bench_data.py --device cuda          # also time sampling with an on-device generator
  python scripts/bench_data.py --path /tmp/h1m.hdf5   # keep (or reuse) the generated file
"""

from __future__ import annotations

# First: bench_common makes OpenMP wait passively, which must happen before torch loads.
from bench_common import (
    command_line, machine_info, median_time, parser_for, print_header, print_table, write_hopper_like,
)

import tempfile
import time
from pathlib import Path

import torch

from mtm.data.formats import open_dataset
from mtm.data.summary import summarize
from mtm.data.trajectories import load_trajectories
from mtm.data.windows import WindowSampler


def main() -> None:
    parser = parser_for(__doc__)
    parser.add_argument("--path", type=Path, help="D4RL file to use; generated there when missing")
    parser.add_argument("--steps", type=int, default=1_000_000, help="transitions in the generated file")
    parser.add_argument("--gzip", action="store_true", help="gzip-compress the generated file")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--batches", type=int, default=500, help="batches per sampling repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    command, info = command_line(), machine_info(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None

    def timed(fn, **kw) -> float:
        return median_time(fn, args.repeats, sync=sync, **kw)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.path or Path(tmp) / "hopper-like-d4rl.hdf5"
        if not path.exists():
            begin = time.perf_counter()
            episodes = write_hopper_like(path, args.steps, gzip=args.gzip)
            print(f"wrote {path} ({args.steps} steps, {episodes} episodes, "
                  f"{path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - begin:.1f} s")

        rows: list[tuple[str, float, str]] = []
        data = load_trajectories(path)  # warm the page cache so every repeat reads the same way

        def inspect() -> None:
            with open_dataset(path) as src:
                summarize(src)

        rows.append(("summarize (mtm inspect)", timed(inspect), ""))
        rows.append(("load_trajectories (D4RL file)", timed(lambda: load_trajectories(path)),
                     f"{data.num_steps} steps, {data.num_episodes} episodes"))
        rows.append(("split(0.05)", timed(lambda: data.split(0.05, seed=0)), ""))
        train, _ = data.split(0.05, seed=0)
        rows.append(("train.stats()", timed(train.stats), f"{train.num_steps} steps"))
        rows.append((f"WindowSampler(L={args.window}, {device})",
                     timed(lambda: WindowSampler(train, args.window, device=device)), ""))

        sampler = WindowSampler(train, args.window, device=device)
        generators = {"device generator": torch.Generator(device=device).manual_seed(0)}
        if device.type != "cpu":
            generators["CPU generator"] = torch.Generator().manual_seed(0)
        for name, generator in generators.items():
            # Warm-up: allocator, caches, CUDA kernels; then each repeat is the mean over --batches.
            per_batch = timed(lambda g=generator: sampler.sample(args.batch, g), warmup=20, inner=args.batches)
            rows.append((f"sample({args.batch}), {name}", per_batch, f"{sampler.num_windows} windows"))

    print_header(info, command)
    print_table(["step", "median", "notes"],
                [(name, f"{s * 1e3:.1f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} µs", note) for name, s, note in rows],
                align="lrl")


if __name__ == "__main__":
    main()

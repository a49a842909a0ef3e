"""model.predict latency against the number of windows, fp32 against bf16 autocast, and the roof.

What a planner (mode plan: candidates x envs windows per forward pass), a policy (K envs) and
offline prediction ask of the network. For each config and batch of B windows, side by side in
one process (bench_common.interleave: rounds, medians): one `model.predict` of B Hopper-sized
windows (S = 11, A = 3) under the RCBC view at the last position, every head decoded (as the
planner's passes; a policy's act() decodes only its action, BENCHMARKS.md Evaluation).

Columns: median ms per call, windows/s, the model's GFLOP/s (matmuls and attention, counted by
scripts/roofline.py), and the fraction of this CPU's matmul roof (the same matmuls timed alone at
their shapes and dtype). The bf16/fp32 column is the speed ratio at the same B: > 1 means bf16 wins.

Usage:
  python scripts/bench_predict.py                                   # small and reference, 1 .. 10,000
  python scripts/bench_predict.py --configs small --windows 1,10,100 --rounds 3
"""

from __future__ import annotations

# First: bench_common makes OpenMP wait passively, which must happen before torch loads.
from bench_common import (
    add_rounds, command_line, interleave, machine_info, parser_for, print_header, print_table, random_model,
    split_list, write_json,
)

import time

import torch

from mtm.config import RunConfig, load_config, resolve_config_path
from mtm.hardware import resolve_precision
from mtm.model.masks import rcbc_mask
from roofline import measure_roof, record_step

S, A = 11, 3  # Hopper-v5


def predict_case(model, windows: int, dtype: str):
    batch = {"states": torch.randn(windows, model.window, S), "actions": torch.randn(windows, model.window, A),
             "returns": torch.randn(windows, model.window, 1),
             "timesteps": torch.arange(model.window).repeat(windows, 1)}
    visible = rcbc_mask(model.layout).expand(windows, -1)
    autocast = resolve_precision(dtype, "cpu", warn=lambda _: None).autocast("cpu")

    def call() -> None:
        with autocast:
            model.predict(batch, visible)

    return call


def timed(call, min_seconds: float = 0.2):
    """A case for interleave: per-call seconds, over enough calls to last about min_seconds."""
    begin = time.perf_counter()
    call()
    once = max(time.perf_counter() - begin, 1e-6)
    calls = max(1, min(1000, int(min_seconds / once)))

    def case() -> float:
        begin = time.perf_counter()
        for _ in range(calls):
            call()
        return (time.perf_counter() - begin) / calls

    return case


def main() -> None:
    parser = parser_for(__doc__)
    parser.add_argument("--configs", default="small,reference")
    parser.add_argument("--windows", default="1,10,100,1000,10000")
    parser.add_argument("--max-gflop", type=float, default=500.0,
                        help="skip a batch whose forward pass is above this many GFLOP (2 x parameters x tokens)")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--threads", type=int, default=1)
    add_rounds(parser, rounds=3, warmup=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    command, info = command_line(), machine_info("cpu")
    dtypes = split_list(args.dtypes)

    rows, records = [], []
    for name in split_list(args.configs):
        cfg = load_config(RunConfig, resolve_config_path(name))
        model = random_model(S, A, cfg.model, cfg.data.window, seed=0)
        for windows in split_list(args.windows, int):
            gflop = 2 * model.num_parameters() * model.layout.num_tokens * windows / 1e9
            if gflop > args.max_gflop:
                print(f"{name}: {windows} windows skipped (about {gflop:.0f} GFLOP a call; --max-gflop)")
                continue
            calls = {dtype: predict_case(model, windows, dtype) for dtype in dtypes}
            roofs = {}
            for dtype, call in calls.items():
                with torch.no_grad():
                    roofs[dtype] = measure_roof(record_step(call), torch.device("cpu"))
            results = interleave({dtype: timed(call) for dtype, call in calls.items()}, args.rounds, args.warmup,
                                 log=None)
            base = results[dtypes[0]].median
            for dtype in dtypes:
                s, roof = results[dtype].median, roofs[dtype]
                rows.append((name, windows, dtype, f"{s * 1e3:.3f}", f"{windows / s:,.0f}", f"{roof.flops / s / 1e9:.1f}",
                             f"{roof.roof_flops_per_s / 1e9:.0f}", f"{roof.fraction(s):.0%}", f"{base / s:.2f}x"))
                records.append({"config": name, "windows": windows, "dtype": dtype, "median_s": s,
                                "min_s": min(results[dtype]), "max_s": max(results[dtype]), "flops": roof.flops,
                                "roof_flops_per_s": roof.roof_flops_per_s, "roof_fraction": roof.fraction(s)})
            print(f"{name}, {windows} windows: " + ", ".join(f"{d} {results[d].median * 1e3:.2f} ms" for d in dtypes),
                  flush=True)
    print_header(info, command)
    print_table(["config", "windows", "dtype", "ms / call", "windows/s", "GFLOP/s", "roof GFLOP/s", "of roof",
                 f"speed vs {dtypes[0]}"], rows, align="lrlrrrrrr")
    write_json(args.json, {"machine": info, "command": command, "results": records})


if __name__ == "__main__":
    main()

"""mtm's training step against the official MTM code's, side by side in ONE process (issue #22, part 2).

The official step is the official code's own `train_one_batch` (github.com/facebookresearch/mtm,
imported from --repo, nothing copied or changed), built by `../shared/anchors/official_mtm_bench.py`:
that script runs unchanged until its first step, whose arguments (model, optimiser, scheduler,
tokenizers, a batch) are kept; each official step here then takes the next AUTO_MASK mask (one per
batch, as the official training loop draws them) of a fixed cycle of --masks masks drawn up front,
and calls `train_one_batch`. The mtm step is `scripts/bench_train.py`'s
(the step `mtm train` runs: sampler, per-sample masks, model, loss, backward, clipping, AdamW). So
the mtm side also pays for drawing its windows and masks, which the official side does before the
timing (bench_train's phase column: 0-2 % of the step): the ratio leans, if at all, against mtm.

Both are built for the same architecture, from each mtm config named in --configs: its width,
encoder and decoder layers, heads, window and dropout, batch --batch-size, on the shared
hopper-medium-replay-v5 file. They run interleaved round by round in rotating order in one process
and one thread count (bench_common.interleave), so a background load hits both alike; the figures are
medians of samples/s, and the ratio mtm / official is what to quote. A timed block is one cycle of
masks (as many steps on the mtm side), so every block of the official side does the same work, and
its FLOPs per step (roofline.MatmulRecorder over one cycle; mtm's over 2 steps of 256 per-sample
masks) give each side's achieved GFLOP/s and fraction of this CPU's matmul roof.

Usage (OFFICIAL: a copy of github.com/facebookresearch/mtm; `pip install einops`):
  python scripts/bench_official.py --repo OFFICIAL --configs reference,small --dtypes fp32,bf16 --rounds 4
"""

from __future__ import annotations

# First: bench_common makes OpenMP wait passively, which must happen before torch loads.
from bench_common import (
    add_rounds, command_line, interleave, machine_info, parser_for, print_header, print_table, split_list,
    write_json,
)

import importlib.util
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from bench_train import SHARED_DATASET, Setting, build_group, load_data
from roofline import MatmulRecorder, measure_roof
from mtm.config import RunConfig, load_config, resolve_config_path

ANCHOR = Path(__file__).resolve().parents[2] / "shared" / "anchors" / "official_mtm_bench.py"
# The official D4RL recipe's masks (its config.yaml and AUTO_MASK's default mode weights).
MASK_RATIOS = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0]
MODE_WEIGHTS = (0.2, 0.1, 0.7)


class _Captured(Exception):
    pass


def official_step_factory(anchor_path: Path, repo: Path, data: Path, cfg: RunConfig, batch_size: int, threads: int,
                          masks_per_cycle: int):
    """-> step(bf16: bool): one official training step, on the next mask of a fixed cycle."""
    spec = importlib.util.spec_from_file_location("official_mtm_bench", anchor_path)
    anchor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(anchor)
    sys.path.insert(0, str(repo))
    anchor.install_stubs()
    import research.mtm.train as upstream
    from research.mtm.masks import create_random_autoregressize_mask

    m = cfg.model
    captured = {}
    original = upstream.train_one_batch

    def capture(*args, **kwargs):
        captured["args"], captured["kwargs"] = args, kwargs
        raise _Captured

    upstream.train_one_batch = capture
    argv = sys.argv
    sys.argv = [str(anchor_path), "--repo", str(repo), "--data", str(data), "--device", "cpu", "--batch", str(batch_size),
                "--threads", str(threads), "--n-embd", str(m.width), "--layers", f"{m.encoder_layers},{m.decoder_layers}",
                "--n-head", str(m.heads), "--dropout", str(m.dropout), "--traj-length", str(cfg.data.window),
                "--warmup", "1", "--steps", "1", "--repeats", "1", "--source", "tensor"]
    try:
        anchor.main()
    except _Captured:
        pass
    finally:
        sys.argv = argv
        upstream.train_one_batch = original
    if "args" not in captured:
        sys.exit("the anchor never reached its first training step")
    args = captured["args"]
    tokenizer_manager, batch = args[3], args[5]
    data_shapes = {k: v.shape[-2:] for k, v in tokenizer_manager.encode(batch).items()}

    # The official loop draws one mask per batch, so its step's work depends on the draw: a fixed
    # cycle of masks (the same for the timed blocks and the FLOP count) makes the two agree, and the
    # cycle is the one of 10,000 drawn from a pool of 4096 masks whose mean number of visible tokens
    # is closest to the pool's: a short cycle of plain draws can be far off (8 draws once averaged
    # 2.4 visible tokens of 12 against the distribution's 4.2), and the step's work grows with it.
    pool = [create_random_autoregressize_mask(data_shapes, MASK_RATIOS, cfg.data.window, "cpu", MODE_WEIGHTS)
            for _ in range(4096)]
    shown = np.array([sum(int(m.sum()) for m in masks.values()) for masks in pool], dtype=float)
    rng = np.random.default_rng(0)
    picks = [rng.choice(len(pool), masks_per_cycle, replace=False) for _ in range(10_000)]
    pick = min(picks, key=lambda p: abs(shown[p].mean() - shown.mean()))
    cycle = [pool[i] for i in pick]
    print(f"official masks: {shown.mean():.2f} visible tokens of {sum(int(m.numel()) for m in pool[0].values())} "
          f"on average over 4096 draws; the cycle of {masks_per_cycle}: {shown[pick].mean():.2f}")
    position = {"next": 0}

    def step(bf16: bool) -> None:
        masks = cycle[position["next"] % len(cycle)]
        position["next"] += 1
        if bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                original(*args[:6], masks)
        else:
            original(*args[:6], masks)

    return step


def flops_per_step(step, steps: int) -> tuple[float, MatmulRecorder]:
    """(FLOPs a step, averaged over `steps` steps; the recorder, for the roof)."""
    with MatmulRecorder() as rec:
        for _ in range(steps):
            step()
    return rec.flops / steps, rec


def main() -> None:
    parser = parser_for(__doc__)
    parser.add_argument("--repo", type=Path, required=True, help="a copy of the official MTM code")
    parser.add_argument("--anchor", type=Path, default=ANCHOR, help="official_mtm_bench.py")
    parser.add_argument("--configs", default="reference", help="mtm configs whose architecture both sides build")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--masks", type=int, default=8,
                        help="the official side's cycle of masks; a timed block is one cycle, of as many steps each side")
    add_rounds(parser, rounds=3, warmup=1)
    args = parser.parse_args()
    if not SHARED_DATASET.exists():
        sys.exit(f"needs the shared dataset {SHARED_DATASET}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cpu")
    command, info = command_line(), machine_info(device)
    dtypes = split_list(args.dtypes)
    results = []
    for name in split_list(args.configs):
        cfg = load_config(RunConfig, resolve_config_path(name), [f"data.path={SHARED_DATASET}"])
        official = official_step_factory(args.anchor, args.repo, SHARED_DATASET, cfg, args.batch_size, args.threads,
                                         args.masks)
        steps = args.masks
        group = build_group(name, cfg, args.batch_size, load_data(cfg, device), device)
        cases, flops, roofs = {}, {}, {}
        for dtype in dtypes:
            bf16 = dtype == "bf16"
            setting = Setting(group, dtype, threads=args.threads, compile=False)
            setting.first_call()
            official(bf16)

            def official_block(b=bf16) -> None:  # None: interleave times the whole call
                for _ in range(steps):
                    official(b)

            cases[("official", dtype)] = official_block
            cases[("mtm", dtype)] = lambda s=setting: s.run_block(steps) * steps
            flops[("official", dtype)], rec = flops_per_step(lambda b=bf16: official(b), steps)  # one whole cycle
            roofs[("official", dtype)] = measure_roof(rec, device)
            flops[("mtm", dtype)], rec = flops_per_step(lambda s=setting: s.one_step(s.train_step(eager=True)), 2)
            roofs[("mtm", dtype)] = measure_roof(rec, device)
        samples = interleave(cases, args.rounds, args.warmup)
        for dtype in dtypes:
            row = {"config": name, "dtype": dtype, "batch_size": args.batch_size}
            for side in ("official", "mtm"):
                sps = [args.batch_size * steps / s for s in samples[(side, dtype)]]
                roof = roofs[(side, dtype)].roof_flops_per_s
                row[side] = {"samples_per_s": statistics.median(sps), "samples_per_s_all": sps,
                             "gflop_per_step": flops[(side, dtype)] / 1e9, "roof_gflop_s": roof / 1e9,
                             "gflop_s": flops[(side, dtype)] * statistics.median(sps) / args.batch_size / 1e9}
                row[side]["of_roof"] = row[side]["gflop_s"] * 1e9 / roof
            row["ratio"] = row["mtm"]["samples_per_s"] / row["official"]["samples_per_s"]
            results.append(row)
    print_header(info, command)
    print(f"timing: {args.warmup} warm-up round(s), then {args.rounds} interleaved rounds of {args.masks} steps per "
          f"side (the official side's cycle of masks); batch {args.batch_size}; medians")
    rows = [[r["config"], r["dtype"], f"{r['official']['samples_per_s']:,.0f}", f"{r['mtm']['samples_per_s']:,.0f}",
             f"**{r['ratio']:.2f}x**", f"{r['official']['gflop_per_step']:.1f} / {r['mtm']['gflop_per_step']:.1f}",
             f"{100 * r['official']['of_roof']:.0f} % / {100 * r['mtm']['of_roof']:.0f} %"] for r in results]
    print_table(["config", "path", "official samples/s", "mtm samples/s", "mtm / official",
                 "GFLOP a step (official / mtm)", "of the matmul roof (official / mtm)"], rows, align="llrrrrr")
    write_json(args.json, {"command": command, "machine": info, "results": results})


if __name__ == "__main__":
    main()

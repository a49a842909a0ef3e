"""Benchmark the image path: tokenizer designs, and reading frames of training windows.

    python scripts/bench_images.py tokenizer [--threads 1] [--size 64] [--batch 64]
    python scripts/bench_images.py loader --path FILE [--episodes 400] [--batches 100] [--step-ms 10]
    python scripts/bench_images.py shown [--config pixels] [--steps 30] [--dtypes fp32,bf16]

tokenizer: forward + backward time of ImageTokenizer + the network's embedding Linear(input_dim ->
512) on batch x L = 4 uint8 frames, for the "patch" (16 x 16 patches, linear projection) and the
"conv" (4 stride-2 3x3 convolutions) encoders, both giving 16 tokens per 64 x 64 frame, and the
"keypoints" encoder (3 convolutions + spatial softmax, 1 token of 16 keypoints per frame); then one
whole MTM training step (width 512, 2 + 1 layers, states + images + returns + actions) with each.
Medians of 5 after 2 warm-up runs (bench_common.median_time).

loader: frames/s of ImageWindows on a native file (made with `mtm collect --env mtm/ReacherPixels-v0
--policy expert --noise 0,0.3` if FILE does not exist), batches of --batch windows x L = 4:
    sync        ImageWindows.windows(ids) in the training thread
    steps       N steps of a stand-in training step (--step-ms of torch matmuls) with frames read
                in the training thread, then by ImageWindows.loader with 1 and 2 worker
                processes (which overlap reading with the step); and the workers' read rate alone
and the peak RSS (VmHWM from /proc/self/status) before and after reading every window once.

shown: one training step (forward + backward of the loss) of a config's model on 64 x 64 frames,
its own batch size, window and training masks (a fresh draw each step), with the image tokenizer
encoding every frame (as before; the static forward still does) against only the frames the mask
shows (ImageTokenizer.encode_shown, the default); the two interleaved step by step, medians, the
share of frames hidden and the speed-up, per precision (bf16 = autocast, where asked).

Peak-memory acceptance on a large file (> 2 GB of raw frames): collect one, e.g.
    mtm collect --env mtm/ReacherPixels-v0 --policy expert --episodes 4000 --output big.hdf5
(4000 x 51 frames x 12 KiB = 2.5 GB raw), then `python scripts/bench_images.py loader --path big.hdf5
--batches 0`: the "peak RSS" line must grow by a few MB, not by the file's raw size.

Figures: BENCHMARKS.md (Images).
"""

from __future__ import annotations

# First: bench_common sets up OpenMP and MuJoCo, which must happen before torch or MuJoCo loads.
from bench_common import command_line, machine_info, median_time, parser_for, print_header

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtm.data.image_windows import ImageWindows
from mtm.model.tokenizers.image import ImageTokenizer
from mtm.model.loss import mtm_loss
from mtm.model.masks import MaskMixture, random_autoregressive_mask
from mtm.model.network import MTM, ModelConfig
from mtm.model.tokenizers import ContinuousTokenizer

L = 4


def bench_tokenizer(args: argparse.Namespace) -> None:
    frames = torch.randint(0, 256, (args.batch, L, args.size, args.size, 3), dtype=torch.uint8)
    print(f"{args.batch} x {L} frames of {args.size} px, {args.threads} thread(s), forward + backward")
    for encoder in ("patch", "conv", "keypoints"):
        torch.manual_seed(0)
        tok = ImageTokenizer(args.size, args.size, 3, encoder=encoder, patch_size=16).train()
        embed = nn.Linear(tok.input_dim, 512)

        def step() -> None:
            embed(tok.encode(frames)).square().mean().backward()

        ms = 1000 * median_time(step, 5, warmup=2)
        params = sum(p.numel() for p in [*tok.parameters(), *embed.parameters()])
        print(f"  {encoder:9s} tokenizer + embedding: k={tok.tokens_per_step} input_dim={tok.input_dim} "
              f"params {params:,}  {ms:.1f} ms  {args.batch * L / ms * 1000:,.0f} frames/s")

        tokenizers = {
            "states": ContinuousTokenizer(6, np.zeros(6), np.ones(6), name="states"),
            "images": tok,
            "returns": ContinuousTokenizer(1, [0.0], [1.0], name="returns"),
            "actions": ContinuousTokenizer(2, np.zeros(2), np.ones(2), name="actions"),
        }
        model = MTM(ModelConfig(width=512, encoder_layers=2, decoder_layers=1, heads=4, dropout=0.1), tokenizers, L)
        batch = {"states": torch.randn(args.batch, L, 6), "images": frames, "returns": torch.randn(args.batch, L, 1),
                 "actions": torch.randn(args.batch, L, 2)}
        visible = random_autoregressive_mask(model.layout, args.batch, torch.Generator().manual_seed(0))

        def train_step() -> None:
            out = model(batch, visible)
            sum(v.square().mean() for v in out.values()).backward()

        ms = 1000 * median_time(train_step, 3, warmup=1)
        print(f"  {encoder:9s} whole MTM step ({model.num_parameters():,} params, {model.layout.num_tokens} tokens): "
              f"{ms:.0f} ms  {args.batch / ms * 1000:,.0f} samples/s")


def bench_shown(args: argparse.Namespace) -> None:
    from mtm.config.loader import load_config, resolve_config_path
    from mtm.config.schema import RunConfig

    cfg = load_config(RunConfig, resolve_config_path(args.config))
    size, window, batch_size = 64, cfg.data.window, cfg.train.batch_size
    tok = ImageTokenizer(size, size, 3, encoder=cfg.tokens.image_encoder, keypoints=cfg.tokens.image_keypoints,
                         patch_size=16)
    tokenizers = {"states": ContinuousTokenizer(6, np.zeros(6), np.ones(6), name="states"), "pixels": tok,
                  "returns": ContinuousTokenizer(1, [0.0], [1.0], name="returns"),
                  "actions": ContinuousTokenizer(2, np.zeros(2), np.ones(2), name="actions")}
    torch.manual_seed(0)
    model = MTM(cfg.model, tokenizers, window).train()
    g = torch.Generator().manual_seed(0)
    batch = {"states": torch.randn(batch_size, window, 6, generator=g), "returns": torch.randn(batch_size, window, 1, generator=g),
             "actions": torch.randn(batch_size, window, 2, generator=g),
             "pixels": torch.randint(0, 256, (batch_size, window, size, size, 3), generator=g, dtype=torch.uint8)}
    masks = MaskMixture.from_config(cfg.train.mask)
    frames = model.layout.slice("pixels")
    every_frame = ImageTokenizer.encode_shown.__get__(tok)  # the bound method, to restore
    print(f"`{args.config}`: width {cfg.model.width}, {cfg.model.encoder_layers} + {cfg.model.decoder_layers} layers, "
          f"batch {batch_size} x window {window}, {size} px frames, {cfg.tokens.image_encoder} encoder, "
          f"masks {cfg.train.mask}, {args.threads} thread(s)")
    for dtype in args.dtypes.split(","):
        cast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
        times = {"every frame": [], "shown frames": []}
        hidden = []
        for i in range(args.steps + 2):
            visible = masks(model.layout, batch_size, g)
            hidden.append(1 - visible[:, frames].float().mean().item())
            for arm in (times if i % 2 else reversed(times)):  # alternate which arm goes first
                tok.encode_shown = (lambda raw, shown: tok.encode(raw)) if arm == "every frame" else every_frame
                start = time.perf_counter()
                with cast:
                    out = model(batch, visible)
                    total, _ = mtm_loss(out, batch, model.tokenizers, visible, None, weights=cfg.train.loss_weights)
                total.backward()
                model.zero_grad(set_to_none=True)
                if i >= 2:  # the first two steps warm up
                    times[arm].append(time.perf_counter() - start)
        tok.encode_shown = every_frame
        every, shown = (1000 * float(np.median(t)) for t in times.values())
        print(f"  {dtype}: frames hidden {100 * np.mean(hidden):.0f} %; step every frame {every:.0f} ms, shown frames "
              f"{shown:.0f} ms: {every / shown:.2f}x (medians of {args.steps})")


def peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_file(path: Path, episodes: int) -> None:
    print(f"collecting {episodes} episodes of mtm/ReacherPixels-v0 into {path}")
    subprocess.run([sys.executable, "-m", "mtm", "collect", "--env", "mtm/ReacherPixels-v0", "--policy", "expert",
                    "--noise", "0,0.3", "--episodes", str(episodes), "--output", str(path), "--no-progress"], check=True,
                   env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})


def bench_loader(args: argparse.Namespace) -> None:
    path = Path(args.path)
    if not path.exists():
        make_file(path, args.episodes)
    from mtm.data.trajectories import load_trajectories
    from mtm.data.windows import WindowSampler

    data = load_trajectories(path)
    sampler = WindowSampler(data, L, keys=("states",))
    images = ImageWindows.for_sampler(path, data.image_keys[0], sampler)
    raw_gb = data.num_steps * np.prod(images.frame_shape) / 1e9
    print(f"{path}: {data.num_episodes} episodes, {sampler.num_windows} windows, frames {images.frame_shape}, "
          f"{raw_gb:.2f} GB raw, {path.stat().st_size / 1e9:.3f} GB on disk")
    generator = torch.Generator().manual_seed(0)
    ids = [sampler.draw(args.batch, generator) for _ in range(args.batches)]
    frames = args.batch * L

    if args.batches:
        images.windows(ids[0])  # open the file
        start = time.perf_counter()
        for batch_ids in ids:
            images.windows(batch_ids)
        sync_s = time.perf_counter() - start
        print(f"  sync        {len(ids) * frames / sync_s:,.0f} frames/s ({1000 * sync_s / len(ids):.1f} ms per batch)")

        a = torch.randn(256, 256)
        reps = max(1, round(args.step_ms / (1000 * median_time(lambda: a @ a, 20, warmup=2))))

        def compute() -> None:
            for _ in range(reps):
                a @ a

        start = time.perf_counter()
        for _ in ids:
            compute()
        compute_s = time.perf_counter() - start
        print(f"  {len(ids)} steps of a stand-in training step ({1000 * compute_s / len(ids):.1f} ms of matmuls) "
              f"with frames read per step:")
        start = time.perf_counter()
        for batch_ids in ids:
            images.windows(batch_ids)
            compute()
        print(f"    in the training thread    {time.perf_counter() - start:.2f} s (compute alone {compute_s:.2f} s)")
        for workers in (1, 2):
            iterator = iter(images.loader(ids, num_workers=workers))
            next(iterator)  # worker start-up is not throughput
            start = time.perf_counter()
            for _ in iterator:
                compute()
            overlapped = time.perf_counter() - start
            iterator = iter(images.loader(ids, num_workers=workers))
            next(iterator)
            start = time.perf_counter()
            count = sum(1 for _ in iterator)
            alone = time.perf_counter() - start
            print(f"    DataLoader, {workers} worker(s)    {overlapped * len(ids) / (len(ids) - 1):.2f} s; "
                  f"reading alone {count * frames / alone:,.0f} frames/s")

    before = peak_rss_mb()
    start = time.perf_counter()
    every = np.arange(sampler.num_windows)
    for begin in range(0, len(every), args.batch):
        images.read(every[begin : begin + args.batch])
    elapsed = time.perf_counter() - start
    print(f"  every window once: {sampler.num_windows * L / elapsed:,.0f} frames/s; peak RSS {before:.0f} MB before, "
          f"{peak_rss_mb():.0f} MB after ({sampler.num_windows * L * np.prod(images.frame_shape) / 1e6:,.0f} MB "
          f"of frames decoded, {raw_gb * 1000:,.0f} MB of distinct raw frames)")


def main() -> None:
    parser = parser_for(__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tok = sub.add_parser("tokenizer")
    tok.add_argument("--threads", type=int, default=1)
    tok.add_argument("--size", type=int, default=64)
    tok.add_argument("--batch", type=int, default=64)
    loader = sub.add_parser("loader")
    loader.add_argument("--path", required=True)
    loader.add_argument("--episodes", type=int, default=400, help="episodes to collect when --path does not exist")
    loader.add_argument("--batch", type=int, default=64)
    loader.add_argument("--batches", type=int, default=100)
    loader.add_argument("--step-ms", type=float, default=10.0, help="stand-in training step length")
    shown = sub.add_parser("shown")
    shown.add_argument("--config", default="pixels", help="a built-in config or a YAML file")
    shown.add_argument("--steps", type=int, default=30, help="timed steps per arm and precision")
    shown.add_argument("--dtypes", default="fp32,bf16", help="fp32 and/or bf16 (autocast)")
    shown.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads if args.command in ("tokenizer", "shown") else 1)
    command, info = command_line(), machine_info()
    {"tokenizer": bench_tokenizer, "loader": bench_loader, "shown": bench_shown}[args.command](args)
    print_header(info, command)


if __name__ == "__main__":
    main()

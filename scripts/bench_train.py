"""Benchmark the real training step of `mtm train`: samples/s per configuration, side by side.

One step is exactly the body of the loop in mtm/training/loop.py, built from the library's own
pieces (nothing of the model is re-implemented here):

    step_generator(seed, rank, step) -> WindowSampler.sample -> MaskMixture (per-sample masks)
    -> MTM forward (under bf16 autocast when asked, optionally torch.compile'd) -> mtm_loss
    -> backward -> clip_grad_norm_ -> AdamW step (mtm.training.optim) -> LR scheduler step

Settings are the cross product of --configs x --batch-size x --dtypes x --threads x --compile.
Settings that share (config, batch size) share one model and one optimiser (their speed does not
depend on the weights' values). Timing is interleaved: every round runs one block of steps of
every setting, in an order that rotates from round to round, so a background load on a shared
machine hits all settings alike. Warm-up steps (and torch.compile's compilation, reported
separately) are excluded; the table gives the median step time over rounds, its min-max range,
and samples/s = batch size / median step time. On CPU each step is also split into phases
(data = windows + mask, forward + loss, backward, optimiser = clip + AdamW + scheduler); on CUDA
the block is bracketed by torch.cuda.synchronize() and peak GPU memory is reported.

Roofline (scripts/roofline.py): each setting's model FLOPs per sample, counted from the shapes of
one real step's matmuls (so the encoder's visible-token packing counts as it runs), and the matmul
roof this process measures by timing each of those shapes alone at the setting's dtype and thread
count. The table gives achieved GFLOP/s, the roof and the fraction of it. --profile N then times
every aten op over N more steps of each CPU setting: where the step's time goes.

Data: the shared dataset ../shared/datasets/hopper-medium-replay-v5.hdf5 when present
(--data auto, the default), else synthetic in-memory Hopper-like trajectories (S = 11, A = 3,
100k steps); --data synthetic or --data PATH choose explicitly.

Usage:
  python scripts/bench_train.py                                     # small config, CPU, fp32/bf16 x 1/2 threads
  python scripts/bench_train.py --configs reference --batch-size 256,2048 --steps 4 --warmup 1
  python scripts/bench_train.py --configs small --compile off,on --threads 1
  python scripts/bench_train.py --device cuda --configs reference --compile off,on --json out.json
  python scripts/bench_train.py --configs reference --batch-size 256 --dtypes fp32 --threads 1 --profile 3

OpenMP: OMP_WAIT_POLICY defaults to PASSIVE here (set before torch is imported); with the default
(active) policy, 2 threads on a 2-core machine whose other core is busy can be 10-100x slower.
"""

from __future__ import annotations

# First: bench_common makes OpenMP wait passively, which must happen before torch loads.
from bench_common import loadavg, machine_info, write_hopper_like

import argparse
import itertools
import json
import logging
import os
import shlex
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from roofline import Roof, format_profile, measure_roof, profile_steps, record_step
from mtm.config import RunConfig, load_config, resolve_config_path
from mtm.data.trajectories import Trajectories, load_trajectories
from mtm.data.windows import WindowSampler
from mtm.hardware import native_bf16
from mtm.model.loss import mtm_loss
from mtm.model.masks import MaskMixture
from mtm.model.network import MTM
from mtm.training.loop import build_tokenizers
from mtm.training.step import step_generator
from mtm.training.optim import build_optimizer, build_scheduler

SHARED_DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "hopper-medium-replay-v5.hdf5"
PHASES = ("data", "fwd+loss", "backward", "optim")


# ---------------------------------------------------------------------------------------------
# Data


def synthetic_hopper(steps: int, rtg: str, horizon: int, seed: int = 0) -> Trajectories:
    """Hopper-like trajectories (bench_common.write_hopper_like), read back through the D4RL reader."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hopper-like.hdf5"
        write_hopper_like(path, steps, seed=seed)
        return load_trajectories(path, rtg=rtg, rtg_horizon=horizon)


def load_data(choice: str, cfg: RunConfig) -> tuple[Trajectories, str]:
    if choice == "synthetic" or (choice == "auto" and not SHARED_DATASET.exists()):
        why = "" if choice == "synthetic" else f" ({SHARED_DATASET} not present)"
        data = synthetic_hopper(100_000, cfg.data.rtg, cfg.data.rtg_horizon)
        return data, f"synthetic Hopper-like, {data.num_steps} steps, {data.num_episodes} episodes{why}"
    path = SHARED_DATASET if choice == "auto" else Path(choice)
    if not path.exists():
        sys.exit(f"--data {path}: no such file")
    data = load_trajectories(path, format=cfg.data.format, rtg=cfg.data.rtg, gamma=cfg.data.gamma,
                             rtg_horizon=cfg.data.rtg_horizon)
    return data, f"{path} ({data.num_steps} steps, {data.num_episodes} episodes)"


# ---------------------------------------------------------------------------------------------
# One group = (config, batch size): data, model, optimiser shared by its settings


@dataclass
class Group:
    name: str
    cfg: RunConfig
    batch_size: int
    device: torch.device
    sampler: WindowSampler
    model: MTM
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    mask_fn: MaskMixture
    compiled: object | None = None  # torch.compile(model, dynamic=True), made on first use
    step: int = 0
    # What the loop accumulates on the device every step (kept, so the step costs what it costs).
    nonfinite: torch.Tensor | None = None
    loss_sum: torch.Tensor | None = None


def build_group(name: str, cfg: RunConfig, batch_size: int, data: Trajectories, device: torch.device) -> Group:
    tc = cfg.train
    train_data, _ = data.split(cfg.data.val_fraction, cfg.data.split_seed)
    stats = train_data.stats()
    keys = ("states", "actions", "returns") if cfg.tokens.use_returns else ("states", "actions")
    sampler = WindowSampler(train_data, cfg.data.window, device=device, keys=keys)
    torch.manual_seed(tc.seed)
    model = MTM(cfg.model, build_tokenizers(cfg, stats), cfg.data.window).to(device)
    model.train()
    optimizer = build_optimizer(model, tc, device)
    scheduler = build_scheduler(optimizer, tc)
    return Group(name, cfg, batch_size, device, sampler, model, optimizer, scheduler,
                 MaskMixture.from_config(tc.mask),
                 nonfinite=torch.zeros((), dtype=torch.int32, device=device),
                 loss_sum=torch.zeros((), device=device))


def train_step(g: Group, forward, autocast, clock: dict[str, float] | None) -> None:
    """One step of mtm/training/loop.py (single process: rank 0). `clock` collects phase times."""
    tc, model, b = g.cfg.train, g.model, g.batch_size
    t0 = time.perf_counter()
    gen = step_generator(tc.seed, 0, g.step)
    batch = g.sampler.sample(b, gen)
    visible = g.mask_fn(model.layout, b, gen, device=g.device)
    t1 = time.perf_counter()
    with autocast:
        out = forward(batch, visible, batch["valid"])
    out = {k: v.float() for k, v in out.items()}
    loss, parts = mtm_loss(out, batch, model.tokenizers, visible, batch["valid"],
                           on=tc.loss_on, weights=tc.loss_weights)
    t2 = time.perf_counter()
    g.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    t3 = time.perf_counter()
    if tc.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
    else:
        torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    g.nonfinite += (~torch.isfinite(loss.detach())).int()
    g.optimizer.step()
    g.scheduler.step()
    g.loss_sum += loss.detach()
    g.step += 1
    if clock is not None:
        t4 = time.perf_counter()
        for phase, dt in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            clock[phase] = clock.get(phase, 0.0) + dt


# ---------------------------------------------------------------------------------------------
# Settings and the interleaved timing


@dataclass
class Setting:
    group: Group
    dtype: str  # fp32 | bf16
    threads: int | None  # CPU threads (None on CUDA: left as it is)
    compile: bool
    first_step_s: float | None = None  # first call: includes compilation when compile is on
    graph_breaks: int | None = None
    error: str | None = None
    block_s: list[float] = field(default_factory=list)  # per-step seconds of each timed block
    phases: dict[str, float] = field(default_factory=dict)  # summed over timed steps (CPU only)
    timed_steps: int = 0
    peak_mem_gb: float = 0.0
    roof: Roof | None = None  # this setting's matmul roof (scripts/roofline.py)

    @property
    def label(self) -> str:
        threads = f"{self.threads}T" if self.threads is not None else "-"
        return (f"{self.group.name:<10} {self.group.batch_size:>5} {self.dtype:<5} {threads:>3} "
                f"{'on' if self.compile else 'off':<4}")

    def forward(self):
        if not self.compile:
            return self.group.model
        if self.group.compiled is None:
            self.group.compiled = torch.compile(self.group.model, dynamic=True)
        return self.group.compiled

    def autocast(self):
        if self.dtype == "bf16":
            return torch.autocast(device_type=self.group.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def run_block(self, steps: int, timed: bool) -> None:
        dev = self.group.device
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            torch.cuda.synchronize(dev)
        clock = {} if timed and dev.type == "cpu" else None
        begin = time.perf_counter()
        for _ in range(steps):
            train_step(self.group, self.forward(), self.autocast(), clock)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            self.peak_mem_gb = max(self.peak_mem_gb, torch.cuda.max_memory_allocated(dev) / 2**30)
        elapsed = time.perf_counter() - begin
        if timed:
            self.block_s.append(elapsed / steps)
            self.timed_steps += steps
            for k, v in (clock or {}).items():
                self.phases[k] = self.phases.get(k, 0.0) + v

    def measure_roof(self) -> None:
        """Record one real step's matmuls (the eager model: a compiled one does the same FLOPs),
        then time each shape alone at this setting's dtype and thread count."""
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        recorder = record_step(lambda: train_step(self.group, self.group.model, self.autocast(), None))
        self.roof = measure_roof(recorder, self.group.device)

    def first_call(self) -> None:
        """The first step, alone: for compiled settings this is where compilation happens."""
        from torch._dynamo.utils import counters

        before = sum(counters["graph_break"].values())
        begin = time.perf_counter()
        try:
            self.run_block(1, timed=False)
        except Exception as exc:  # noqa: BLE001 - a failed compile is a result to report, not a crash
            self.error = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
            return
        self.first_step_s = time.perf_counter() - begin
        if self.compile:
            self.graph_breaks = sum(counters["graph_break"].values()) - before

    @property
    def median_s(self) -> float:
        return statistics.median(self.block_s) if self.block_s else float("nan")

    @property
    def samples_per_s(self) -> float:
        return self.group.batch_size / self.median_s if self.block_s else float("nan")


def run_interleaved(settings: list[Setting], warmup: int, rounds: int, block: int, log) -> None:
    # First calls one at a time (compilation happens here), then warm-up and timing interleaved.
    for s in settings:
        s.first_call()
        status = s.error if s.error else f"{s.first_step_s:.2f} s"
        log(f"  first step  {s.label} {status}")
    live = [s for s in settings if s.error is None]
    for s in live:
        if s.dtype == "bf16" and not native_bf16(s.group.device)[0]:
            log(f"  matmul roof {s.label} not measured: bf16 is emulated on this device (bare bf16 matmuls "
                f"run far slower than the model's autocast path, so there is no meaningful roof)")
            continue
        s.measure_roof()
        log(f"  matmul roof {s.label} {s.roof.roof_flops_per_s / 1e9:.1f} GFLOP/s over {s.roof.shapes} shapes, "
            f"{s.roof.flops / s.group.batch_size / 1e6:.0f} MFLOP/sample")
    for r in range(warmup):
        for s in live:
            s.run_block(1, timed=False)
    for r in range(rounds):
        order = live[r % len(live):] + live[:r % len(live)] if live else []
        for s in order:
            s.run_block(block, timed=True)
        log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{s.block_s[-1] * 1e3:.0f}" for s in live) + " ms/step")


# ---------------------------------------------------------------------------------------------
# Reporting


def gpu_info(device: torch.device) -> dict:
    info = {"device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def ratio_rows(settings: list[Setting]) -> list[tuple[str, str, float]]:
    """(what, where, ratio of samples/s) for bf16/fp32, 2T/1T (any thread pair), compile on/off."""
    ok = [s for s in settings if s.block_s]
    key = lambda s: (s.group.name, s.group.batch_size, s.dtype, s.threads, s.compile)  # noqa: E731
    by = {key(s): s for s in ok}
    rows = []
    for s in ok:
        name, b, dtype, threads, comp = key(s)
        where = f"{name} B={b}"
        tdesc = f" {threads}T" if threads is not None else ""
        if dtype == "bf16" and (o := by.get((name, b, "fp32", threads, comp))):
            rows.append(("bf16 / fp32", f"{where}{tdesc} compile {'on' if comp else 'off'}",
                         s.samples_per_s / o.samples_per_s))
        if threads is not None:
            for lower in sorted(t2 for (n2, b2, d2, t2, c2) in by if (n2, b2, d2, c2) == (name, b, dtype, comp)
                                and t2 is not None and t2 < threads):
                o = by[(name, b, dtype, lower, comp)]
                rows.append((f"{threads}T / {lower}T", f"{where} {dtype} compile {'on' if comp else 'off'}",
                             s.samples_per_s / o.samples_per_s))
        if comp and (o := by.get((name, b, dtype, threads, False))):
            rows.append(("compile on / off", f"{where} {dtype}{tdesc}", s.samples_per_s / o.samples_per_s))
    return rows


def print_report(settings: list[Setting], params: dict[str, int], info: dict, data_desc: str,
                 command: str, rounds: int, block: int, warmup: int) -> None:
    cuda = info["device"].startswith("cuda")
    print(f"\ncommand: {command}")
    print(f"machine: {info['cpu']} ({info['cpu_cores_visible']} cores visible, CPU path {info['cpu_path']}, "
          f"bf16 {'native' if info['cpu_native_bf16'] else 'emulated'})"
          + (f", GPU {info['gpu']} (CUDA {info['cuda']})" if cuda else ""))
    print(f"torch {info['torch']}, OMP_WAIT_POLICY={info['omp_wait_policy']}, date {info['date']}, "
          f"load average {info['loadavg_start']} at start, {loadavg()} at end")
    print(f"data: {data_desc}")
    print("parameters: " + ", ".join(f"{n} {p:,} ({p / 1e6:.2f} M)" for n, p in params.items()))
    done = max((len(s.block_s) for s in settings), default=0)
    ran = f"{rounds}" if done == rounds else f"{done} (of {rounds} planned: interrupted)"
    print(f"timing: {warmup} warm-up step(s) per setting, then {ran} interleaved round(s) of {block} step(s); "
          "median over rounds\n")

    head = f"{'config':<10} {'batch':>5} {'dtype':<5} {'thr':>3} {'comp':<4} {'first step':>11} " \
           f"{'median step':>12} {'range (min-max)':>17} {'samples/s':>10} {'GFLOP/s':>8} {'roof':>7} {'of roof':>7}"
    head += "  peak GPU mem" if cuda else "  phases: data / fwd+loss / backward / optim"
    print(head)
    print("-" * len(head))
    for s in settings:
        if s.error:
            print(f"{s.label} {s.error}")
            continue
        first = f"{s.first_step_s:9.2f} s"
        lo, hi = min(s.block_s), max(s.block_s)
        spread = f"{lo * 1e3:.0f}-{hi * 1e3:.0f} ms"
        line = f"{s.label} {first:>11} {s.median_s * 1e3:9.1f} ms {spread:>17} {s.samples_per_s:10.0f}"
        if s.roof is not None:
            line += (f" {s.roof.flops / s.median_s / 1e9:8.1f} {s.roof.roof_flops_per_s / 1e9:7.1f} "
                     f"{100 * s.roof.fraction(s.median_s):6.0f}%")
        if cuda:
            line += f"  {s.peak_mem_gb:.2f} GiB"
        elif s.timed_steps:
            total = sum(s.phases.values())
            line += "  " + " / ".join(f"{100 * s.phases[p] / total:.0f}%" for p in PHASES)
        if s.compile and s.graph_breaks is not None:
            line += f"  [{s.graph_breaks} graph breaks]"
        print(line)

    rows = ratio_rows(settings)
    if rows:
        print("\nratios of samples/s (same run, interleaved)")
        for what, where, ratio in rows:
            print(f"  {what:<17} {where:<40} {ratio:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--configs", default="small",
                        help="comma-separated built-in config names or files (default: small)")
    parser.add_argument("--batch-size", default="config",
                        help="comma-separated batch sizes, or 'config' for each config's own (default)")
    parser.add_argument("--dtypes", default="fp32,bf16", help="fp32 and/or bf16 (autocast)")
    parser.add_argument("--threads", default=None,
                        help="comma-separated CPU thread counts (default: 1,2 on CPU; unchanged on CUDA)")
    parser.add_argument("--compile", default="off", help="off, on or off,on: torch.compile(model, dynamic=True)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per setting (default: 10 on CPU, 50 on CUDA)")
    parser.add_argument("--block", type=int, default=None,
                        help="steps per timed block (default: 1 on CPU, 10 on CUDA)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per setting after the first")
    parser.add_argument("--data", default="auto", help="auto (shared Hopper file if present), synthetic, or a path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every config, e.g. model.dropout=0 (repeatable)")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="after timing, time every aten op over STEPS more steps of each setting (CPU)")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA GPU available")
    cuda = device.type == "cuda"
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if set(dtypes) - {"fp32", "bf16"}:
        sys.exit(f"--dtypes: expected fp32 and/or bf16, got {args.dtypes}")
    compiles = [{"off": False, "on": True}[c.strip()] for c in args.compile.split(",") if c.strip()]
    if args.threads is None:
        threads = [None] if cuda else [1, 2]
    else:
        threads = [int(t) for t in args.threads.split(",")]
    steps = args.steps or (50 if cuda else 10)
    block = args.block or (10 if cuda else 1)
    rounds = max(1, -(-steps // block))
    if any(compiles) and not cuda and len(set(threads)) > 1:
        # Inductor's C++ kernels otherwise bake the thread count of compile time into the code.
        import torch._inductor.config as inductor_config

        inductor_config.cpp.dynamic_threads = True
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)  # graph-break warnings: counted instead
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (the loop does not enable TF32)

    command = "OMP_WAIT_POLICY=" + os.environ["OMP_WAIT_POLICY"] + " " + shlex.join([sys.executable, *sys.argv])
    info = machine_info(**gpu_info(device))
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    settings: list[Setting] = []
    params: dict[str, int] = {}
    data_desc = ""
    data_cache: dict = {}
    for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
        cfg = load_config(RunConfig, resolve_config_path(name), args.overrides)
        data_key = (cfg.data.rtg, cfg.data.rtg_horizon, cfg.data.gamma, cfg.data.format)
        if data_key not in data_cache:
            data_cache[data_key] = load_data(args.data, cfg)
        data, data_desc = data_cache[data_key]
        sizes = [cfg.train.batch_size] if args.batch_size == "config" else [int(b) for b in args.batch_size.split(",")]
        label = Path(name).stem
        for b in sizes:
            group = build_group(label, cfg, b, data, device)
            params[label] = group.model.num_parameters()
            log(f"{label}: width {cfg.model.width}, {cfg.model.encoder_layers}+{cfg.model.decoder_layers} layers, "
                f"{cfg.model.heads} heads, L={cfg.data.window}, returns {'on' if cfg.tokens.use_returns else 'off'}, "
                f"{group.model.layout.num_tokens} tokens, {params[label]:,} parameters, batch {b}")
            for dtype, t, comp in itertools.product(dtypes, threads, compiles):
                settings.append(Setting(group, dtype, t, comp))

    log(f"{len(settings)} settings; {rounds} rounds x {block} step(s) after {args.warmup} warm-up step(s)")
    try:
        run_interleaved(settings, args.warmup, rounds, block, log)
    except KeyboardInterrupt:  # Ctrl-C or `timeout -s INT`: report the rounds that finished
        log("interrupted: reporting the rounds completed so far")
        for s in settings:
            if not s.block_s and s.error is None:
                s.error = "not measured (interrupted before its first timed block)"
    print_report(settings, params, info, data_desc, command, rounds, block, args.warmup)
    if args.profile:
        for s in settings:
            if s.error is None and not s.compile and not cuda:  # on CUDA ops return before they finish
                print(f"\nwhere the time goes: {s.label.strip()} ({args.profile} steps)")
                if s.threads is not None:
                    torch.set_num_threads(s.threads)
                timer, wall = profile_steps(lambda: train_step(s.group, s.group.model, s.autocast(), None),
                                            args.profile)
                print("\n".join("  " + line for line in format_profile(timer, wall, args.profile)))

    if args.json:
        info["loadavg_end"] = loadavg()
        results = []
        for s in settings:
            results.append({
                "config": s.group.name, "batch_size": s.group.batch_size, "dtype": s.dtype,
                "threads": s.threads, "compile": s.compile, "parameters": params[s.group.name],
                "error": s.error, "first_step_s": s.first_step_s, "graph_breaks": s.graph_breaks,
                "timed_steps": s.timed_steps, "median_step_s": s.median_s if s.block_s else None,
                "min_step_s": min(s.block_s) if s.block_s else None,
                "max_step_s": max(s.block_s) if s.block_s else None,
                "samples_per_s": s.samples_per_s if s.block_s else None,
                "phase_fractions": ({p: s.phases[p] / sum(s.phases.values()) for p in PHASES}
                                    if s.phases else None),
                "peak_gpu_mem_gib": s.peak_mem_gb if cuda else None,
                "model_flops_per_sample": s.roof.flops / s.group.batch_size if s.roof else None,
                "roof_flops_per_s": s.roof.roof_flops_per_s if s.roof else None,
                "roof_fraction": s.roof.fraction(s.median_s) if s.roof and s.block_s else None,
            })
        payload = {"command": command, "machine": info, "data": data_desc, "rounds": rounds,
                   "rounds_completed": max((len(s.block_s) for s in settings), default=0), "block": block,
                   "warmup": args.warmup, "results": results,
                   "ratios": [{"what": w, "where": where, "ratio": r} for w, where, r in ratio_rows(settings)]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()

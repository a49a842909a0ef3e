"""Benchmark the real training step of `mtm train`: samples/s per configuration, side by side.

One step is the step the loop of mtm/training/loop.py calls, mtm.training.step.TrainStep, built
from the same functions (build_tokenizers, build_model, build_optimizer, build_scheduler,
MaskMixture.from_config, resolve_precision); nothing of it is re-implemented here:

    step_generator(seed, rank, step) -> WindowSampler.sample -> MaskMixture (per-sample masks)
    -> MTM forward (under bf16 autocast when asked, optionally torch.compile'd) -> mtm_loss
    -> backward -> clip_grad_norm_ -> AdamW step (mtm.training.optim) -> LR scheduler step

Settings are the cross product of --configs x --batch-size x --dtypes x --threads x --compile.
Settings that share (config, batch size) share one model and one optimiser (their speed does not
depend on the weights' values). Every round runs one block of steps of every setting, interleaved
(bench_common.interleave). The first step of each setting runs alone first (torch.compile's
compilation happens there and is reported separately), then --warmup untimed rounds; the table
gives the median step time over rounds, its min-max range, and samples/s = batch size / median
step time. On CPU each step is also split into phases (TrainStep's: data = windows + mask,
forward + loss, backward, optimiser = clip + AdamW + scheduler); on CUDA the block is bracketed by
torch.cuda.synchronize() and peak GPU memory is reported.

Roofline (scripts/roofline.py): each setting's model FLOPs per sample, counted from the shapes of
one real step's matmuls (so the encoder's visible-token packing counts as it runs), and the matmul
roof this process measures by timing each of those shapes alone at the setting's dtype and thread
count. The table gives achieved GFLOP/s, the roof and the fraction of it. --profile N then times
every aten op over N more steps of each CPU setting: where the step's time goes.

Data: the shared dataset ../shared/datasets/hopper-medium-replay-v5.hdf5 when present
(--data auto, the default), else a synthetic Hopper-like file in a temporary folder (S = 11, A = 3,
100k steps); --data synthetic or --data PATH choose explicitly. It is read, split and windowed by
mtm.training.run_data.load_run_data, as `mtm train` reads it.

Usage:
  python scripts/bench_train.py                                     # small config, CPU, fp32/bf16 x 1/2 threads
  python scripts/bench_train.py --configs reference --batch-size 256,2048 --steps 4 --warmup 1
  python scripts/bench_train.py --configs small --compile off,on --threads 1
  python scripts/bench_train.py --device cuda --configs reference --compile off,on --json out.json
  python scripts/bench_train.py --configs reference --batch-size 256 --dtypes fp32 --threads 1 --profile 3

OpenMP: OMP_WAIT_POLICY defaults to PASSIVE here (bench_common, before torch is imported); with the
default (active) policy, 2 threads on a 2-core machine whose other core is busy can be 10-100x slower.
"""

from __future__ import annotations

# First: bench_common makes OpenMP wait passively, which must happen before torch loads.
from bench_common import (
    Samples, command_line, interleave, machine_info, parser_for, print_header, print_table, split_list,
    write_hopper_like, write_json,
)

import atexit
import dataclasses
import itertools
import json
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from roofline import Roof, format_profile, measure_roof, profile_steps, record_step
from mtm.config import RunConfig, config_to_dict, load_config, resolve_config_path
from mtm.data.batches import WindowBatches
from mtm.hardware import native_bf16, resolve_precision
from mtm.model.masks import MaskMixture
from mtm.training.build import build_run_model
from mtm.training.optim import build_optimizer, build_scheduler
from mtm.training.run_data import RunData, load_run_data
from mtm.training.runtime import Runtime
from mtm.training.step import PHASES, TrainStep

SHARED_DATASET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "hopper-medium-replay-v5.hdf5"
SYNTHETIC_STEPS = 100_000


# ---------------------------------------------------------------------------------------------
# Data


def dataset_path(choice: str, scratch: Path) -> tuple[Path, str]:
    """The file --data names (auto: the shared Hopper file, else synthetic data written to `scratch`)
    and what to call it."""
    if choice == "synthetic" or (choice == "auto" and not SHARED_DATASET.exists()):
        why = "" if choice == "synthetic" else f", {SHARED_DATASET} not present"
        path = scratch / "hopper-like.hdf5"
        write_hopper_like(path, SYNTHETIC_STEPS, seed=0)
        return path, f"synthetic Hopper-like{why}"
    path = SHARED_DATASET if choice == "auto" else Path(choice)
    if not path.exists():
        sys.exit(f"--data {path}: no such file")
    return path, str(path)


def load_data(cfg: RunConfig, device: torch.device) -> RunData:
    """The data as `mtm train` reads, splits and windows it for this config (mtm.training.run_data)."""
    data = load_run_data(cfg, Runtime(device=device), checkpoint=None)
    if data.val_sampler is not None:
        data.val_sampler.close()  # the benchmark only trains
    return data


# ---------------------------------------------------------------------------------------------
# One group = (config, batch size): data, model, optimiser shared by its settings


@dataclass
class Group:
    name: str
    cfg: RunConfig
    batch_size: int
    device: torch.device
    sampler: WindowBatches
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    mask_fn: MaskMixture
    compiled: object | None = None  # torch.compile(model, dynamic=True), made on first use
    step: int = 0
    # What the loop accumulates on the device every step (kept, so the step costs what it costs).
    loss_sum: torch.Tensor | None = None


def build_group(name: str, cfg: RunConfig, batch_size: int, data: RunData, device: torch.device) -> Group:
    """What `mtm train` builds for this config (single process), from the same functions."""
    tc = cfg.train
    torch.manual_seed(tc.seed)
    model = build_run_model(cfg, Runtime(device=device), data, checkpoint=None)  # as `mtm train` builds it
    model.train()
    optimizer = build_optimizer(model, tc, device)
    return Group(name, cfg, batch_size, device, data.train_sampler, model, optimizer, build_scheduler(optimizer, tc),
                 MaskMixture.from_config(tc.mask), loss_sum=torch.zeros((), device=device))


# ---------------------------------------------------------------------------------------------
# Settings


@dataclass(eq=False)  # hashable by identity: a key of interleave's cases
class Setting:
    group: Group
    dtype: str  # fp32 | bf16
    threads: int | None  # CPU threads (None on CUDA: left as it is)
    compile: bool
    first_step_s: float | None = None  # first call: includes compilation when compile is on
    graph_breaks: int | None = None
    error: str | None = None
    block_s: Samples = field(default_factory=Samples)  # per-step seconds of each timed block
    phase_blocks: list[dict[str, float]] = field(default_factory=list)  # per block, warm-up included (CPU)
    peak_mem_gb: float = 0.0
    roof: Roof | None = None  # this setting's matmul roof (scripts/roofline.py)
    _step: TrainStep | None = None

    @property
    def label(self) -> list:
        return [self.group.name, self.group.batch_size, self.dtype,
                f"{self.threads}T" if self.threads is not None else "-", "on" if self.compile else "off"]

    def train_step(self, eager: bool = False) -> TrainStep:
        """This setting's TrainStep over the group's model and optimiser; `eager`: without torch.compile."""
        g = self.group
        if self._step is None:
            forward = g.model
            if self.compile:
                if g.compiled is None:
                    g.compiled = torch.compile(g.model, dynamic=True)
                forward = g.compiled
            autocast = resolve_precision(self.dtype, g.device).autocast(g.device)
            self._step = TrainStep(g.model, forward, g.optimizer, g.scheduler, g.sampler, g.mask_fn, g.cfg.train,
                                   batch_size=g.batch_size, device=g.device, autocast=autocast)
        return dataclasses.replace(self._step, forward=g.model) if eager else self._step

    def one_step(self, step: TrainStep | None = None, mark=None) -> None:
        g = self.group
        train = step or self.train_step()
        loss, _, _ = train(g.step, mark) if mark is not None else train(g.step)
        g.loss_sum += loss.detach()
        g.step += 1

    def run_block(self, steps: int) -> float:
        """Seconds per step over `steps` steps (CUDA: synchronised at both ends)."""
        dev = self.group.device
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            torch.cuda.synchronize(dev)
        phases: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        last = time.perf_counter()

        def mark(phase: str) -> None:
            nonlocal last
            now = time.perf_counter()
            phases[phase] += now - last
            last = now

        begin = last
        for _ in range(steps):
            self.one_step(mark=mark if dev.type == "cpu" else None)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            self.peak_mem_gb = max(self.peak_mem_gb, torch.cuda.max_memory_allocated(dev) / 2**30)
        else:
            self.phase_blocks.append(phases)
        return (time.perf_counter() - begin) / steps

    def measure_roof(self) -> None:
        """Record one real step's matmuls (the eager model: a compiled one does the same FLOPs),
        then time each shape alone at this setting's dtype and thread count."""
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        eager = self.train_step(eager=True)
        self.roof = measure_roof(record_step(lambda: self.one_step(eager)), self.group.device)

    def first_call(self) -> None:
        """The first step, alone: for compiled settings this is where compilation happens."""
        from torch._dynamo.utils import counters

        before = sum(counters["graph_break"].values())
        begin = time.perf_counter()
        try:
            self.run_block(1)
        except Exception as exc:  # noqa: BLE001 - a failed compile is a result to report, not a crash
            self.error = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
            return
        self.phase_blocks.clear()
        self.first_step_s = time.perf_counter() - begin
        if self.compile:
            self.graph_breaks = sum(counters["graph_break"].values()) - before

    @property
    def phases(self) -> dict[str, float]:
        """Share of each phase in the timed blocks (the first `warmup` blocks were warm-up)."""
        timed = self.phase_blocks[-len(self.block_s):] if self.block_s else []
        totals = {p: sum(b[p] for b in timed) for p in PHASES}
        whole = sum(totals.values())
        return {p: t / whole for p, t in totals.items()} if whole else {}

    @property
    def samples_per_s(self) -> float:
        return self.group.batch_size / self.block_s.median if self.block_s else float("nan")


def prepare(settings: list[Setting], log) -> list[Setting]:
    """First calls one at a time (compilation happens here), then each setting's matmul roof;
    returns the settings that did not fail."""
    for s in settings:
        s.first_call()
        log(f"  first step  {' '.join(map(str, s.label))} {s.error or f'{s.first_step_s:.2f} s'}")
    live = [s for s in settings if s.error is None]
    for s in live:
        label = " ".join(map(str, s.label))
        if s.dtype == "bf16" and not native_bf16(s.group.device)[0]:
            log(f"  matmul roof {label} not measured: bf16 is emulated on this device (bare bf16 matmuls "
                f"run far slower than the model's autocast path, so there is no meaningful roof)")
            continue
        s.measure_roof()
        log(f"  matmul roof {label} {s.roof.roof_flops_per_s / 1e9:.1f} GFLOP/s over {s.roof.shapes} shapes, "
            f"{s.roof.flops / s.group.batch_size / 1e6:.0f} MFLOP/sample")
    return live


# ---------------------------------------------------------------------------------------------
# Reporting


def ratio_rows(settings: list[Setting]) -> list[tuple[str, str, float]]:
    """(what, where, ratio of samples/s) for bf16/fp32, 2T/1T (any thread pair), compile on/off."""
    ok = [s for s in settings if s.block_s]

    def key(s: Setting) -> tuple:
        return s.group.name, s.group.batch_size, s.dtype, s.threads, s.compile

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
    print_header(info, command)
    print(f"data: {data_desc}")
    print("parameters: " + ", ".join(f"{n} {p:,} ({p / 1e6:.2f} M)" for n, p in params.items()))
    done = max((len(s.block_s) for s in settings), default=0)
    ran = f"{rounds}" if done == rounds else f"{done} (of {rounds} planned: interrupted)"
    print(f"timing: the first step alone, {warmup} warm-up round(s), then {ran} interleaved round(s) of "
          f"{block} step(s) per setting; median over rounds\n")

    table = []
    for s in settings:
        if s.error or not s.block_s:
            table.append(s.label + [s.error or "not measured (interrupted before its first timed block)"])
            continue
        row = s.label + [f"{s.first_step_s:.2f} s", f"{s.block_s.median * 1e3:.1f} ms",
                         f"{s.block_s.spread(scale=1e3)} ms", f"{s.samples_per_s:,.0f}"]
        if s.roof is not None:
            row += [f"{s.roof.flops / s.block_s.median / 1e9:.1f}", f"{s.roof.roof_flops_per_s / 1e9:.1f}",
                    f"{100 * s.roof.fraction(s.block_s.median):.0f}%"]
        else:
            row += ["", "", ""]
        if cuda:
            row.append(f"{s.peak_mem_gb:.2f} GiB")
        else:
            row.append(" / ".join(f"{100 * f:.0f}%" for f in s.phases.values()))
        if s.compile and s.graph_breaks is not None:
            row[-1] += f" [{s.graph_breaks} graph breaks]"
        table.append(row)
    print_table(["config", "batch", "dtype", "thr", "comp", "first step", "median step", "range (min-max)",
                 "samples/s", "GFLOP/s", "roof", "of roof",
                 "peak GPU mem" if cuda else "phases: data / fwd+loss / backward / optim"],
                table, align="lrlrl")

    rows = ratio_rows(settings)
    if rows:
        print("\nratios of samples/s (same run, interleaved)")
        print_table(["ratio", "where", "value"], [(w, where, f"{r:.2f}x") for w, where, r in rows], align="ll")


def main() -> None:
    parser = parser_for(__doc__)
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
                        help="steps per timed block, one block a round (default: 1 on CPU, 10 on CUDA)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed rounds (one block each) after the first step (default 2)")
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
    dtypes = split_list(args.dtypes)
    if set(dtypes) - {"fp32", "bf16"}:
        sys.exit(f"--dtypes: expected fp32 and/or bf16, got {args.dtypes}")
    compiles = [{"off": False, "on": True}[c] for c in split_list(args.compile)]
    threads = ([None] if cuda else [1, 2]) if args.threads is None else split_list(args.threads, int)
    steps = args.steps or (50 if cuda else 10)
    block = args.block or (10 if cuda else 1)
    rounds = max(1, -(-steps // block))
    if any(compiles) and not cuda and len(set(threads)) > 1:
        # Inductor's C++ kernels otherwise bake the thread count of compile time into the code.
        import torch._inductor.config as inductor_config

        inductor_config.cpp.dynamic_threads = True
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)  # graph-break warnings: counted instead
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (the loop does not enable TF32)

    command, info = command_line(), machine_info(device)

    def log(msg: str) -> None:
        print(msg, flush=True)

    settings: list[Setting] = []
    params: dict[str, int] = {}
    scratch = Path(tempfile.mkdtemp(prefix="bench_train-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    path, data_name = dataset_path(args.data, scratch)
    data_cache: dict = {}
    for name in split_list(args.configs):
        cfg = load_config(RunConfig, resolve_config_path(name), args.overrides + [f"data.path={path}"])
        data_key = json.dumps([config_to_dict(cfg)["data"], config_to_dict(cfg)["tokens"]], sort_keys=True)
        if data_key not in data_cache:
            data_cache[data_key] = load_data(cfg, device)
        data = data_cache[data_key]
        data_desc = f"{data_name} ({data.data.num_steps} steps, {data.data.num_episodes} episodes)"
        sizes = [cfg.train.batch_size] if args.batch_size == "config" else split_list(args.batch_size, int)
        label = Path(name).stem
        for b in sizes:
            group = build_group(label, cfg, b, data, device)
            params[label] = group.model.num_parameters()
            log(f"{label}: width {cfg.model.width}, {cfg.model.encoder_layers}+{cfg.model.decoder_layers} layers, "
                f"{cfg.model.heads} heads, L={cfg.data.window}, returns {'on' if cfg.tokens.use_returns else 'off'}, "
                f"{group.model.layout.num_tokens} tokens, {params[label]:,} parameters, batch {b}")
            for dtype, t, comp in itertools.product(dtypes, threads, compiles):
                settings.append(Setting(group, dtype, t, comp))

    log(f"{len(settings)} settings; {rounds} rounds x {block} step(s) after {args.warmup} warm-up round(s)")
    try:
        live = prepare(settings, log)
    except KeyboardInterrupt:  # Ctrl-C or `timeout -s INT` (gpu_checks.sh): report what there is
        log("interrupted before the timed rounds")
        live = []
    if live:
        for s, samples in interleave({s: (lambda s=s: s.run_block(block)) for s in live}, rounds, args.warmup,
                                     log=log).items():
            s.block_s = samples
    print_report(settings, params, info, data_desc, command, rounds, block, args.warmup)
    if args.profile:
        for s in live:
            if not s.compile and not cuda:  # on CUDA ops return before they finish
                print(f"\nwhere the time goes: {' '.join(map(str, s.label))} ({args.profile} steps)")
                if s.threads is not None:
                    torch.set_num_threads(s.threads)
                timer, wall = profile_steps(s.one_step, args.profile)
                print("\n".join("  " + line for line in format_profile(timer, wall, args.profile)))

    results = []
    for s in settings:
        ok = bool(s.block_s)
        results.append({
            "config": s.group.name, "batch_size": s.group.batch_size, "dtype": s.dtype,
            "threads": s.threads, "compile": s.compile, "parameters": params[s.group.name],
            "error": s.error, "first_step_s": s.first_step_s, "graph_breaks": s.graph_breaks,
            "timed_steps": len(s.block_s) * block, "median_step_s": s.block_s.median if ok else None,
            "min_step_s": s.block_s.low if ok else None, "max_step_s": s.block_s.high if ok else None,
            "samples_per_s": s.samples_per_s if ok else None,
            "phase_fractions": s.phases or None,
            "peak_gpu_mem_gib": s.peak_mem_gb if cuda else None,
            "model_flops_per_sample": s.roof.flops / s.group.batch_size if s.roof else None,
            "roof_flops_per_s": s.roof.roof_flops_per_s if s.roof else None,
            "roof_fraction": s.roof.fraction(s.block_s.median) if s.roof and ok else None,
        })
    write_json(args.json, {
        "command": command, "machine": info, "data": data_desc, "rounds": rounds,
        "rounds_completed": max((len(s.block_s) for s in settings), default=0), "block": block,
        "warmup": args.warmup, "results": results,
        "ratios": [{"what": w, "where": where, "ratio": r} for w, where, r in ratio_rows(settings)]})


if __name__ == "__main__":
    main()

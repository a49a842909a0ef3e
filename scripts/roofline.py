"""How close a training step runs to the matmul roof of the machine it runs on (used by bench_train.py).

The roof is measured, not looked up: every matrix multiply of one real step is recorded with its
shape and dtype (a TorchDispatchMode sees the packed encoder's visible-token matmuls, the decoder's,
the backward's and the autocast dtype as they really are), then each distinct shape is timed alone,
dense, in this process, at the current thread count. Then

    ideal step time  = sum over the step's matmuls of the time that shape takes alone
    roof FLOP/s      = matmul FLOPs of the step / ideal step time
    roof fraction    = ideal step time / measured step time
                     = (model FLOPs per sample x samples/s) / roof FLOP/s

A fraction of 1 means the step does nothing but its matmuls, each as fast as a bare torch.mm of
that shape. Attention's batched products (tiny at L = 4) are counted with their FLOPs; the fused
CPU attention kernel's FLOPs (4 B H M^2 d forward, 2.5x that backward) are added to the model FLOPs
but not to the roof's timing (they are <1% of the step at the built-in sizes).
"""

from __future__ import annotations

# First: bench_common makes OpenMP wait passively, which must happen before torch loads.
from bench_common import median_time

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
# Under inference_mode, linear and scaled_dot_product_attention reach the dispatcher whole (with
# autograd they arrive decomposed into addmm and a fused attention kernel): both are counted.
_ATTENTION_FWD = {"_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                  "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
                  "scaled_dot_product_attention"}


@dataclass(frozen=True)
class Matmul:
    batch: int
    m: int
    k: int
    n: int
    dtype: torch.dtype

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.k * self.n


class MatmulRecorder(TorchDispatchMode):
    """Records the shape of every mm / addmm / bmm / baddbmm (and attention FLOPs) it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.matmuls: Counter[Matmul] = Counter()
        self.attention_flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._overloadpacket.__name__
        if name in ("mm", "addmm"):
            a, b = (args[0], args[1]) if name == "mm" else (args[1], args[2])
            self.matmuls[Matmul(1, a.shape[0], a.shape[1], b.shape[1], a.dtype)] += 1
        elif name == "linear":
            x, w = args[0], args[1]
            self.matmuls[Matmul(1, x.numel() // x.shape[-1], x.shape[-1], w.shape[0], x.dtype)] += 1
        elif name in ("bmm", "baddbmm"):
            a, b = (args[0], args[1]) if name == "bmm" else (args[1], args[2])
            self.matmuls[Matmul(a.shape[0], a.shape[1], a.shape[2], b.shape[2], a.dtype)] += 1
        elif name in _ATTENTION_FWD:
            q, k = args[0], args[1]
            b, h, m, d = q.shape
            self.attention_flops += 4 * b * h * m * k.shape[2] * d
        elif name.startswith("_scaled_dot_product") and name.endswith("_backward"):
            q = args[1]  # (grad_out, query, key, ...)
            b, h, m, d = q.shape
            self.attention_flops += int(2.5 * 4 * b * h * m * args[2].shape[2] * d)
        return func(*args, **kwargs)

    @property
    def matmul_flops(self) -> int:
        return sum(mm.flops * count for mm, count in self.matmuls.items())

    @property
    def flops(self) -> int:
        return self.matmul_flops + self.attention_flops


def record_step(step: Callable[[], None]) -> MatmulRecorder:
    """Run `step` once under the recorder."""
    with MatmulRecorder() as recorder:
        step()
    return recorder


def time_matmul(mm: Matmul, device: torch.device, min_seconds: float = 0.05) -> float:
    """Median seconds of one dense matmul of this shape and dtype on `device`, alone."""
    a = torch.randn(mm.batch, mm.m, mm.k, device=device).to(mm.dtype)
    b = torch.randn(mm.batch, mm.k, mm.n, device=device).to(mm.dtype)
    out = torch.empty(mm.batch, mm.m, mm.n, device=device, dtype=mm.dtype)
    a2, b2, out2 = (a[0], b[0], out[0]) if mm.batch == 1 else (None, None, None)

    def run() -> None:
        if mm.batch == 1:
            torch.mm(a2, b2, out=out2)
        else:
            torch.bmm(a, b, out=out)

    sync = torch.cuda.synchronize if device.type == "cuda" else None
    once = max(median_time(run, 1, warmup=1, sync=sync), 1e-7)
    # Enough calls per sample to time (each sample about min_seconds), not so many that it drags.
    return median_time(run, 5, inner=max(3, min(200, int(min_seconds / once))), sync=sync)


@dataclass
class Roof:
    flops: int  # model FLOPs of one step (matmuls + attention)
    matmul_flops: int
    ideal_s: float  # the step's matmuls, each timed alone
    shapes: int  # distinct matmul shapes timed

    @property
    def roof_flops_per_s(self) -> float:
        return self.matmul_flops / self.ideal_s

    def fraction(self, step_s: float) -> float:
        """Share of the measured step time that the matmuls alone would take at the roof."""
        return (self.flops / step_s) / self.roof_flops_per_s


class OpTimer(TorchDispatchMode):
    """Wall time per aten op (CPU: ops run synchronously, so the time of the call is the op's time).
    Cheaper and closer to the real step than torch.profiler, whose per-op bookkeeping inflated
    elementwise ops up to 8x here. The gap to the step's wall time is Python and autograd overhead."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        begin = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        name = func._overloadpacket.__name__
        self.seconds[name] += time.perf_counter() - begin
        self.calls[name] += 1
        return out


def profile_steps(step: Callable[[], None], steps: int) -> tuple[OpTimer, float]:
    """(per-op times summed over `steps` steps, wall seconds per step)."""
    with OpTimer() as timer:
        begin = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - begin) / steps
    return timer, wall


def format_profile(timer: OpTimer, wall: float, steps: int, top: int = 16) -> list[str]:
    """Lines: each top op's ms per step, share of the step, calls per step; then the rest."""
    lines = [f"{'op':<34} {'ms/step':>8} {'share':>6} {'calls':>6}"]
    shown = 0.0
    for name, total in timer.seconds.most_common(top):
        shown += total
        lines.append(f"{name:<34} {total / steps * 1e3:8.1f} {100 * total / steps / wall:5.1f}% "
                     f"{timer.calls[name] // steps:6d}")
    rest = sum(timer.seconds.values()) - shown
    lines.append(f"{'(other ops)':<34} {rest / steps * 1e3:8.1f} {100 * rest / steps / wall:5.1f}%")
    outside = wall - sum(timer.seconds.values()) / steps
    lines.append(f"{'(outside ops: Python, autograd)':<34} {outside * 1e3:8.1f} {100 * outside / wall:5.1f}%")
    return lines


def measure_roof(recorder: MatmulRecorder, device: torch.device) -> Roof:
    ideal = sum(time_matmul(mm, device) * count for mm, count in recorder.matmuls.items())
    return Roof(recorder.flops, recorder.matmul_flops, ideal, len(recorder.matmuls))

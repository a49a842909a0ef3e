"""What the machine does fast: the device to run on, the numeric precision of training and
inference, and CPU threads.

Devices. `auto` takes a CUDA GPU, then Apple's MPS, then the CPU (resolve_device); DEVICE_CHOICES is
the one list `mtm train --device`, `mtm eval --device` and `train.device` accept.

Precision. bf16 autocast roughly doubles a Transformer's throughput where the hardware multiplies
bf16 natively (CUDA GPUs from Ampere on; CPUs with AVX512-BF16 or AMX) and is many times slower than
fp32 where it is emulated (AVX2-only CPUs; BENCHMARKS.md), so `auto` asks the device; a forced bf16
where it is emulated runs after one warning line.

Threads. With OpenMP's default active waiting, torch threads stall badly when another core is busy
(BENCHMARKS.md). `configure_threads` runs before torch is imported (the `mtm` command line does it
first thing), so every torch import here is late; the thread count stays torch's default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, get_args

from mtm.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: What a run or a policy may ask for; the one list the configs, the CLI and resolve_precision share.
PrecisionName = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(PrecisionName)
#: The devices to ask for (a CUDA device may also be named with its index: cuda:1).
DEVICE_CHOICES = ("auto", "cuda", "cpu", "mps")


def configure_threads() -> None:
    """Before torch loads: passive OpenMP waiting unless the user set a wait policy themselves."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def thread_summary() -> str:
    """'2 threads (OMP_WAIT_POLICY=PASSIVE)', with where the count came from when the user set it."""
    import torch  # late: configure_threads must run before torch loads
    source = " from OMP_NUM_THREADS" if os.environ.get("OMP_NUM_THREADS") else ""
    policy = os.environ.get("OMP_WAIT_POLICY", "default (active)")
    n = torch.get_num_threads()
    return f"{n} thread{'s' if n != 1 else ''}{source} (OMP_WAIT_POLICY={policy})"


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """auto = cuda, then mps, then cpu. Asking for an absent accelerator is a user error."""
    import torch  # late: configure_threads must run before torch loads
    base = name.split(":")[0]
    if base not in DEVICE_CHOICES:
        raise ConfigError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if base == "auto":
        base = "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    if base == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but no CUDA GPU is available; use --device cpu or auto")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    if base == "mps" and not mps:
        raise ConfigError("device 'mps' requested but MPS is not available; use --device cpu or auto")
    return torch.device(base)


@cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


#: Overrides the CPU's bf16 detection: "native" or "emulated". The test suite runs both resolutions
#: of `auto` on any CPU with it (.ci/run); a user whose CPU is detected wrongly may set it too.
CPU_BF16_ENV = "MTM_CPU_BF16"


def _cpu_bf16_override() -> bool | None:
    value = os.environ.get(CPU_BF16_ENV, "").strip().lower()
    if not value:
        return None
    if value not in ("native", "emulated"):
        raise ConfigError(f"{CPU_BF16_ENV}={value!r} is not understood; set it to native or emulated, or unset it")
    return value == "native"


def cpu_kernel_path() -> str:
    """The CPU's fastest matmul path as users know it: 'AMX', 'AVX512-BF16', 'AVX512', 'AVX2', ...

    torch's ATen capability (AVX2 / AVX512; ATEN_CPU_CAPABILITY lowers it) refined by the CPU's bf16
    features (Linux /proc/cpuinfo), capped by oneDNN's view (ONEDNN_MAX_CPU_ISA lowers it). Where
    MTM_CPU_BF16 overrides the detection, the path says so."""
    import torch  # late: configure_threads must run before torch loads
    aten = torch.backends.cpu.get_cpu_capability()
    override = _cpu_bf16_override()
    if override is not None:
        return f"{aten}, bf16 taken as {'native' if override else 'emulated'} ({CPU_BF16_ENV})"
    if not cpu_native_bf16():
        return aten
    flags = _cpu_flags()
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    return f"{aten} (native bf16)"


def cpu_native_bf16() -> bool:
    """True where oneDNN runs bf16 matmuls in hardware (AVX512-BF16 / AMX; Arm with bf16), or where
    MTM_CPU_BF16 says so."""
    override = _cpu_bf16_override()
    if override is not None:
        return override
    import torch  # late: configure_threads must run before torch loads
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without oneDNN: bf16 is emulated at best
        return False


@dataclass(frozen=True)
class Precision:
    """The precision a run uses, what was asked for, and why (printed at start, saved with the run)."""

    dtype: str  # "fp32" | "bf16"
    requested: str  # "auto" | "fp32" | "bf16"
    native: bool  # the device multiplies bf16 in hardware
    reason: str

    def autocast(self, device: Any, cache: bool = True) -> AbstractContextManager:
        """bf16 autocast on `device` for bf16, a no-op for fp32. cache=False: no cache of the weights'
        bf16 copies (a CUDA graph capture must not keep tensors made outside it)."""
        import torch  # late: configure_threads must run before torch loads
        if self.dtype != "bf16":
            return nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, cache_enabled=cache)

    def describe(self) -> str:
        return f"{self.dtype} ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def native_bf16(device: Any) -> tuple[bool, str]:
    """(does `device` multiply bf16 in hardware, a few words on what it is)."""
    import torch  # late: configure_threads must run before torch loads
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return bool(torch.cuda.is_bf16_supported()), f"GPU {name}"
    if device.type == "cpu":
        return cpu_native_bf16(), f"CPU {cpu_kernel_path()}"
    # MPS and others: bf16 support varies by OS version and kernel; fp32 is the safe default.
    return False, f"{device.type} device"


def _device_type(device: Any) -> str:
    import torch  # late: configure_threads must run before torch loads
    return torch.device(device).type


_warned: set[tuple[str, str]] = set()


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


#: Below this much work per forward pass, token rows x width^2 (about the multiply-adds of one
#: layer's projections), bf16 autocast is slower than fp32 on the CPUs with native bf16 measured:
#: its casts and per-call overhead outweigh the faster matmuls. A `small` policy of 10 envs
#: (60 rows x 128^2 = 1.0M: bf16 0.80x) stays fp32; a planner's candidates (bf16 1.5-2.2x), a
#: `reference`-wide model even for one window (12 x 512^2 = 3.1M: 1.36x) and training take bf16
#: (BENCHMARKS.md, "model.predict by batch size").
CPU_BF16_MIN_WORK = 2 ** 21


def resolve_precision(requested: str, device: Any, *, work: int | None = None, fp32_only: str | None = None,
                      warn: Callable[[str], None] = _stderr) -> Precision:
    """The precision to run at on `device`. `auto` is bf16 only where bf16 is native and, on a CPU,
    where the forward passes are large enough for it to pay (`work`: the model's own measure of a
    pass, token rows x width^2, TokenModel.inference_work; None = large, as in training); a forced bf16 on a device that emulates it runs
    as asked, after one warning line (once per process). `fp32_only`: why the model computes in
    fp32 whatever is asked (a model's `fp32_only`), so fp32 is what runs and is reported."""
    if requested not in PRECISIONS:
        raise ConfigError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    native, what = native_bf16(device)
    if fp32_only:
        return Precision("fp32", requested, native, f"the model computes in fp32 whatever is asked: {fp32_only}")
    if requested == "fp32":
        return Precision("fp32", requested, native, f"asked for; {what}")
    if requested == "bf16":
        if not native:
            key = (str(device), what)
            if key not in _warned:
                _warned.add(key)
                warn(f"warning: bf16 was asked for, but the {what} has no native bf16 matmuls: bf16 is "
                     f"emulated there and about 10x slower than fp32; use precision auto or fp32")
            return Precision("bf16", requested, native, f"asked for; emulated on the {what}")
        return Precision("bf16", requested, native, f"asked for; native on the {what}")
    if native and work is not None and work < CPU_BF16_MIN_WORK and _device_type(device) == "cpu":
        size = f"{work:,} rows x width^2 (bf16 pays from {CPU_BF16_MIN_WORK:,})"
        return Precision("fp32", requested, native, f"auto: the {what} has native bf16 matmuls, but forward "
                                                    f"passes of {size} are too small for bf16 to pay")
    if native:
        return Precision("bf16", requested, native, f"auto: the {what} has native bf16 matmuls")
    return Precision("fp32", requested, native, f"auto: the {what} has no native bf16 matmuls")

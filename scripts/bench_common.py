"""What every benchmark script records about the machine it ran on (imported by scripts/bench_*.py)."""

from __future__ import annotations

import datetime
import os
import platform
from typing import Any


def loadavg() -> str | None:
    """The 1, 5 and 15-minute load averages: how busy the shared cores were."""
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return None


def machine_info(**extra: Any) -> dict[str, Any]:
    """Date, host, CPU model and visible cores, library versions, OpenMP policy, load average;
    `extra` adds script-specific fields (the device, GPU name, ...)."""
    import torch

    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": cpu,
        "cpu_cores_visible": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "loadavg_start": loadavg(),
    }
    try:
        import gymnasium
        import mujoco

        info.update(gymnasium=gymnasium.__version__, mujoco=mujoco.__version__)
    except ImportError:
        pass
    info.update(extra)
    return info

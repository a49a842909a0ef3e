"""Where training runs: device choice, torchrun process groups, seeding.

Single device by default. Under `torchrun` (RANK / WORLD_SIZE / LOCAL_RANK set in the environment)
each process joins a process group — NCCL on CUDA, gloo on CPU — and only rank 0 logs and saves,
as in nanoGPT.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from mtm.errors import ConfigError

DEVICE_CHOICES = ("auto", "cuda", "cpu", "mps")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """auto = cuda, then mps, then cpu. Asking for an absent accelerator is a user error."""
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


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_runtime(device: str) -> Runtime:
    """Join the torchrun process group when launched by torchrun; otherwise a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Runtime(device=resolve_device(device))
    import torch.distributed as dist  # late: only torchrun (DDP) runs need it

    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Runtime(device=dev, rank=rank, world_size=world_size, local_rank=local_rank)


def teardown_runtime(rt: Runtime) -> None:
    if rt.distributed:
        import torch.distributed as dist  # late: only torchrun (DDP) runs need it

        if dist.is_initialized():
            dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)

"""What every benchmark script records about the machine it ran on (imported by scripts/bench_*.py)."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtm.hardware import configure_threads

# Every benchmark imports this module before torch: OpenMP then waits passively, as under the mtm
# command (with active waiting, 2 threads can be 10-100x slower when the other core is busy).
configure_threads()


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

    from mtm.hardware import cpu_kernel_path, cpu_native_bf16

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
        "cpu_path": cpu_kernel_path(),  # AVX2 / AVX512 / AVX512-BF16 / AMX: the path the figures ran on
        "cpu_native_bf16": cpu_native_bf16(),
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


def random_vector_env(env_id: str, num_envs: int, seed: int):
    """gymnasium's SyncVectorEnv of `num_envs` envs with seeded random actions: the raw step rate
    every loop is measured against. SAME_STEP autoreset, so every call is K real simulator steps."""
    import gymnasium as gym

    vec = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(num_envs)],
                                   autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    vec.reset(seed=seed)
    vec.action_space.seed(seed)
    return vec


def time_random_steps(vec, num_envs: int, target_steps: int) -> tuple[int, int, float]:
    """Step `vec` with random actions for about `target_steps` transitions: (steps, episodes ended, seconds)."""
    import time

    import numpy as np

    calls = max(1, round(target_steps / num_envs))
    episodes = 0
    begin = time.perf_counter()
    for _ in range(calls):
        _, _, terminated, truncated, _ = vec.step(vec.action_space.sample())
        episodes += int(np.count_nonzero(terminated | truncated))
    return calls * num_envs, episodes, time.perf_counter() - begin


def calibrated_random_runner(env_id: str, num_envs: int, seed: int):
    """mtm's EpisodeRunner of `num_envs` envs with a seeded RandomPolicy, after a calibration run of
    max(4, K) episodes: (runner, policy, the next unused reset seed, mean random-episode length).
    The length decides how many episodes make a chunk of a given number of steps."""
    import numpy as np

    from mtm.rollout import EpisodeRunner, RandomPolicy

    runner = EpisodeRunner(env_id, num_envs)
    policy = RandomPolicy(runner.action_space, seed=seed)
    lengths = [len(ep.actions) for _, ep in runner.run(policy, max(4, num_envs), seed)]
    return runner, policy, seed + len(lengths), float(np.mean(lengths))


@dataclass(kw_only=True)
class TimedSetting:
    """What every interleaved-timing setting keeps: the rate of each timed chunk (steps/s), the
    steps and episodes they covered, and the stepper to close (a vector env or an EpisodeRunner)."""

    rates: list[float] = field(default_factory=list)
    steps: int = 0
    episodes: int = 0
    _vec: Any = None
    _runner: Any = None

    def record(self, rate: float, steps: int, episodes: int) -> None:
        self.rates.append(rate)
        self.steps += steps
        self.episodes += episodes

    def close(self) -> None:
        if self._vec is not None:
            self._vec.close()
        if self._runner is not None:
            self._runner.close()

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


def write_hopper_like(path: Path, steps: int, seed: int = 0, gzip: bool = False) -> int:
    """A Hopper-like D4RL-layout file of `steps` transitions (S = 11, A = 3, random values); returns
    its number of episodes. The synthetic data of every benchmark that needs no real dataset."""
    import h5py
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = []
    while sum(lengths) < steps:
        # Two thirds of episodes run to the 1000-step time limit; the rest fall over early.
        lengths.append(1000 if rng.random() < 2 / 3 else int(rng.integers(20, 1000)))
    lengths[-1] -= sum(lengths) - steps  # the trailing episode is cut by the file limit
    ends = np.cumsum(lengths) - 1
    terminals = np.zeros(steps, bool)
    timeouts = np.zeros(steps, bool)
    for end, length in zip(ends[:-1], lengths[:-1]):
        (timeouts if length == 1000 else terminals)[end] = True
    options = {"compression": "gzip"} if gzip else {}
    with h5py.File(path, "w") as f:
        f.create_dataset("observations", data=rng.normal(size=(steps, 11)).astype(np.float32), **options)
        f.create_dataset("next_observations", data=rng.normal(size=(steps, 11)).astype(np.float32), **options)
        f.create_dataset("actions", data=rng.uniform(-1, 1, size=(steps, 3)).astype(np.float32), **options)
        f.create_dataset("rewards", data=rng.uniform(0, 4, size=steps).astype(np.float32), **options)
        f.create_dataset("terminals", data=terminals, **options)
        f.create_dataset("timeouts", data=timeouts, **options)
        f["metadata/env_id"] = "Hopper-v5"
    return len(lengths)

"""What every benchmark script shares (imported first by scripts/bench_*.py): the timer, the
interleaved rounds, the machine header, the table and JSON writers, the command-line boilerplate,
the random-action env steppers and the synthetic dataset. One copy of each, so that every figure in
BENCHMARKS.md is measured and reported the same way.

Timing rules (BENCHMARKS.md, first section): settings compared with each other run side by side in
one process, interleaved round by round in an order that rotates every round (a background load on
a shared machine then hits all of them alike); warm-up is excluded; the figure is the median over
rounds with its min-max range.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import platform
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from envs import headless_rendering_default
from mtm.hardware import configure_threads
from mtm.io import atomic_write_text

# Every benchmark imports this module before torch and MuJoCo, as the mtm command line does: OpenMP
# then waits passively (with active waiting, 2 threads can be 10-100x slower when the other core is
# busy), and MuJoCo renders headless through EGL unless a backend was chosen.
configure_threads()
headless_rendering_default()

K = TypeVar("K", bound=Hashable)


# ---------------------------------------------------------------------------------------------
# Timing


def median_time(fn: Callable[[], object], repeats: int, *, warmup: int = 0, inner: int = 1,
                sync: Callable[[], None] | None = None) -> float:
    """Median seconds of one call of `fn` over `repeats` samples, after `warmup` untimed calls. A
    sample times `inner` calls in a row and divides (for calls too short to time one by one);
    `sync` (e.g. torch.cuda.synchronize) brackets each sample, so asynchronous work is counted."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        if sync is not None:
            sync()
        begin = time.perf_counter()
        for _ in range(inner):
            fn()
        if sync is not None:
            sync()
        samples.append((time.perf_counter() - begin) / inner)
    return statistics.median(samples)


class Samples(list):
    """One setting's measurements, one per timed round (seconds, or a rate), with their summary."""

    @property
    def median(self) -> float:
        return statistics.median(self) if self else float("nan")

    @property
    def low(self) -> float:
        return min(self) if self else float("nan")

    @property
    def high(self) -> float:
        return max(self) if self else float("nan")

    def spread(self, fmt: str = ",.0f", scale: float = 1.0) -> str:
        """'min-max', each value times `scale` in format `fmt`."""
        return f"{self.low * scale:{fmt}}-{self.high * scale:{fmt}}" if self else ""


def interleave(cases: Mapping[K, Callable[[], float | None]], rounds: int, warmup: int = 0,
               log: Callable[[str], None] | None = print) -> dict[K, Samples]:
    """Run every case once per round, `warmup` untimed rounds first, in an order that rotates by
    one every round. A case returns its own measurement (a rate, or the seconds of the part of its
    work that counts) or None, and then the seconds of the whole call are its measurement.

    Ctrl-C (or `timeout -s INT`) ends the rounds early: what finished is returned, and a round cut
    short leaves some cases one sample ahead of the others."""
    names = list(cases)
    results: dict[K, Samples] = {name: Samples() for name in names}
    if not names:
        return results
    start = time.perf_counter()
    try:
        for r in range(warmup + rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                begin = time.perf_counter()
                value = cases[name]()
                if r >= warmup:
                    results[name].append(time.perf_counter() - begin if value is None else value)
            if log is not None:
                what = "warm-up round" if r < warmup else "round"
                n, of = (r + 1, warmup) if r < warmup else (r + 1 - warmup, rounds)
                log(f"{what} {n}/{of} done ({time.perf_counter() - start:.0f} s)")
    except KeyboardInterrupt:
        if log is not None:
            log("interrupted: reporting the rounds completed so far")
    return results


# ---------------------------------------------------------------------------------------------
# The machine, the command, the report


def loadavg() -> str | None:
    """The 1, 5 and 15-minute load averages: how busy the shared cores were."""
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return None


def command_line() -> str:
    """This process's command, with the OpenMP wait policy it ran under."""
    return f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} " + shlex.join([sys.executable, *sys.argv])


def machine_info(device: Any = "cpu", **extra: Any) -> dict[str, Any]:
    """Date, host, CPU model and visible cores, kernel path, library versions, OpenMP policy, load
    average, the GPU when `device` is one; `extra` adds script-specific fields."""
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
        "mujoco_gl": os.environ.get("MUJOCO_GL"),
        "device": str(device),
        "loadavg_start": loadavg(),
    }
    if torch.device(device).type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    try:
        import gymnasium
        import mujoco

        info.update(gymnasium=gymnasium.__version__, mujoco=mujoco.__version__)
    except ImportError:
        pass
    info.update(extra)
    return info


def print_header(info: dict[str, Any], command: str) -> None:
    """The lines every report starts with: the command, the machine, the software, the load (the
    load average at the end is taken now and kept in `info`)."""
    info["loadavg_end"] = loadavg()
    gpu = f", GPU {info['gpu']} (CUDA {info['cuda']})" if "gpu" in info else ""
    print(f"\ncommand: {command}")
    print(f"machine: {info['cpu']} ({info['cpu_cores_visible']} cores visible, CPU path {info['cpu_path']}, "
          f"bf16 {'native' if info['cpu_native_bf16'] else 'emulated'}){gpu}, device {info['device']}")
    libraries = "".join(f", {name} {info[name]}" for name in ("gymnasium", "mujoco") if name in info)
    print(f"software: python {info['python']}, torch {info['torch']} ({info['torch_threads']} threads, "
          f"OMP_WAIT_POLICY={info['omp_wait_policy']}){libraries}, MUJOCO_GL={info['mujoco_gl']}")
    print(f"date {info['date']}, load average {info['loadavg_start']} at start, {info['loadavg_end']} at end\n")


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> None:
    """A Markdown table padded to line up in a terminal (so it pastes into BENCHMARKS.md as it is).
    Cells are shown as given (format numbers first); `align` has one letter per column, l or r,
    and columns it does not cover are right-aligned."""
    cells = [[str(c) for c in header]] + [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(len(header))]
    left = [i < len(align) and align[i] == "l" for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        row = list(row) + [""] * (len(header) - len(row))
        return "| " + " | ".join(c.ljust(w) if lft else c.rjust(w) for c, w, lft in zip(row, widths, left)) + " |"

    print(line(cells[0]))
    print("|" + "|".join(("-" * (w + 2)) if lft else ("-" * (w + 1) + ":") for w, lft in zip(widths, left)) + "|")
    for row in cells[1:]:
        print(line(row))


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    """The results as JSON (parent folders made), when --json was given."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nwrote {path}")


def update_json_file(path: Path, update: Callable[[dict], None]) -> None:
    """Apply `update` to the JSON object in `path` as it is now ({} when absent) and write it back,
    under a lock (path.lock) and atomically: several benchmark commands (e.g. one per core) can add
    records to one results file, and a kill leaves the previous file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() else {}
        update(data)
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    """The JSON in `path`; None when it is absent or unreadable (a run that has not written it yet)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def save_results(path: Path, results: dict, *keys: tuple[str, ...]) -> None:
    """Write the entries of `results` at each key path (e.g. ("runs", "hopper/seed0")) into the
    results file as it is now, leaving every other entry as it is there (update_json_file: other
    commands may be adding theirs)."""
    def update(merged: dict) -> None:
        for key in keys:
            target, source = merged, results
            for part in key[:-1]:
                target, source = target.setdefault(part, {}), source[part]
            target[key[-1]] = source[key[-1]]
    update_json_file(path, update)


def mean_std(values: Sequence[float | None], digits: int = 1, seeds: int = 0) -> str:
    """Mean ± std (sample std) of the measured values over seeds; "(1 seed)" when there is one, and
    the count where it is less than the table's `seeds`."""
    values = [v for v in values if v is not None]
    if not values:
        return "not measured"
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (1 seed)"
    count = f" ({len(values)} seeds)" if len(values) < seeds else ""
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}{count}"


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or None (saying why) where matplotlib is
    missing: plots are optional, the tables are not."""
    try:
        import matplotlib
    except ImportError:
        print("no plot: matplotlib is missing (pip install -e '.[bench]')")
        return None
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    return plt


def replace_block(path: Path, begin: str, end: str, block: str) -> bool:
    """Replace the text from the `begin` marker to the `end` marker in `path` (BENCHMARKS.md) with
    `block`, which carries the markers itself; False, with the file left alone, if it lacks them."""
    text = Path(path).read_text()
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    atomic_write_text(Path(path), head + block + rest.split(end, 1)[1])
    return True


class Stopped(SystemExit):
    """Raised by run_command once its command has ended after the script was asked to stop (Ctrl-C or
    SIGTERM): exits with 128 + the signal, like a process the signal ended. `timing` and `returncode`
    are the command's, so a caller can record the attempt before it passes the exception on."""

    def __init__(self, signum: int, returncode: int, timing: dict[str, Any]) -> None:
        super().__init__(128 + signum)
        self.signum, self.returncode, self.timing = signum, returncode, timing


def run_command(cmd: Sequence[Any], env: Mapping[str, str], cwd: Path, *, capture: bool = False,
                dry_run: bool = False) -> tuple[int, str, dict[str, Any]]:
    """Print `ENV=... cmd`, run it, and return (exit code, stdout if captured, timing): the command
    line as shown, its start, wall seconds, CPU seconds of the child alone (user + system) and the
    1-minute load average at its start. Benchmarks that drive the mtm command line use this.

    Stopping: the command runs in a session of its own, so a Ctrl-C at the terminal reaches this
    script alone, which passes it on as one SIGINT (SIGTERM too becomes SIGINT): `mtm train` saves a
    checkpoint and stops, where a Ctrl-C sent to both would have been its second, the one that stops
    it without saving. A further signal is passed on as itself. Once the command has ended, Stopped
    is raised (with the timing) instead of returning."""
    shown = " ".join([f"{k}={v}" for k, v in env.items()] + [shlex.join(map(str, cmd))])
    print(f"$ {shown}", flush=True)
    if dry_run:
        return 0, "", {}
    started, load = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), os.getloadavg()[0]
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    received: list[int] = []
    proc = subprocess.Popen([str(c) for c in cmd], env=dict(os.environ, **env), cwd=cwd,
                            stdout=subprocess.PIPE if capture else None, text=True, start_new_session=True)

    def pass_on(signum, _frame):
        received.append(signum)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT if len(received) == 1 else signum)

    in_main = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    try:
        out, _ = proc.communicate()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    t1, r1 = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        print(f"  -> exit code {proc.returncode}", flush=True)
    timing = {"command": shown, "started": started, "wall_s": round(t1 - t0, 1), "load_avg_1min": round(load, 2),
              "cpu_s": round((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), 1)}
    if received:
        print(f"  -> stopped by {signal.Signals(received[0]).name}; the command ended with exit code "
              f"{proc.returncode}", flush=True)
        raise Stopped(received[0], proc.returncode, timing)
    return proc.returncode, out or "", timing


# ---------------------------------------------------------------------------------------------
# Command-line boilerplate


def parser_for(doc: str) -> argparse.ArgumentParser:
    """An argument parser whose --help shows the script's docstring (its first line as the
    description, the rest, with its usage examples, as written)."""
    first, _, rest = doc.strip().partition("\n")
    return argparse.ArgumentParser(description=first, epilog=rest.strip("\n"),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_rounds(parser: argparse.ArgumentParser, rounds: int, warmup: int, json_flag: bool = True) -> None:
    """--rounds, --warmup (in rounds, untimed) and --json, as every interleaved benchmark has them."""
    parser.add_argument("--rounds", type=int, default=rounds, help=f"timed rounds (default {rounds})")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"untimed rounds first (default {warmup})")
    if json_flag:
        parser.add_argument("--json", type=Path, help="also write the results here as JSON")


def add_envs(parser: argparse.ArgumentParser, envs: str, num_envs: str, chunk_steps: int | None = None) -> None:
    """--envs and --num-envs (K), comma-separated, as every env benchmark has them; with
    `chunk_steps`, --chunk-steps and --seed of the benchmarks that step envs in chunks."""
    parser.add_argument("--envs", default=envs, help=f"comma-separated gymnasium ids (default: {envs})")
    parser.add_argument("--num-envs", default=num_envs, help=f"comma-separated K values (default: {num_envs})")
    if chunk_steps is not None:
        parser.add_argument("--chunk-steps", type=int, default=chunk_steps,
                            help=f"transitions per timed chunk, about (default {chunk_steps})")
        parser.add_argument("--seed", type=int, default=0, help="the first reset seed (default 0)")


def split_list(text: str, cast: Callable[[str], Any] = str) -> list:
    """'a, b,c' -> [cast('a'), cast('b'), cast('c')]: the comma-separated lists of every script."""
    return [cast(part.strip()) for part in text.split(",") if part.strip()]


# ---------------------------------------------------------------------------------------------
# Environments: the raw step rates every evaluation loop is measured against


class RandomStepper:
    """K envs of `env_id` stepped with seeded random actions, by one of two steppers:

      SyncVectorEnv   gymnasium's SyncVectorEnv, autoreset mode SAME_STEP, so every call is K real
                      simulator steps (NEXT_STEP's reset-only calls would overstate the rate)
      EpisodeRunner   mtm.rollout.EpisodeRunner with RandomPolicy: what `mtm collect` and
                      evaluation use (per-episode seeding, observation copies, episode recording)

    `chunk(steps)` runs about that many transitions (the runner: whole episodes, their number set
    by a calibration run of max(4, K) episodes) and returns steps/s over the wall time of the
    chunk; `steps` and `episodes` count what every chunk covered, warm-up included."""

    KINDS = ("SyncVectorEnv", "EpisodeRunner")

    def __init__(self, env_id: str, kind: str, num_envs: int, seed: int) -> None:
        import gymnasium as gym
        import numpy as np

        from mtm.rollout import EpisodeRunner, RandomPolicy

        self.kind, self.num_envs, self.steps, self.episodes = kind, num_envs, 0, 0
        self.vec = self.runner = None
        if kind == "SyncVectorEnv":
            self.vec = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(num_envs)],
                                                autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
            self.vec.reset(seed=seed)
            self.vec.action_space.seed(seed)
        elif kind == "EpisodeRunner":
            self.runner = EpisodeRunner(env_id, num_envs)
            self._policy = RandomPolicy(self.runner.action_space, seed=seed)
            lengths = [len(ep.actions) for _, ep in self.runner.run(self._policy, max(4, num_envs), seed)]
            self._next_seed, self.calibration_length = seed + len(lengths), float(np.mean(lengths))
        else:
            raise ValueError(f"unknown stepper {kind!r}; choose {' or '.join(self.KINDS)}")

    def chunk(self, target_steps: int) -> float:
        import numpy as np

        begin = time.perf_counter()
        if self.vec is not None:
            calls = max(1, round(target_steps / self.num_envs))
            for _ in range(calls):
                _, _, terminated, truncated, _ = self.vec.step(self.vec.action_space.sample())
                self.episodes += int(np.count_nonzero(terminated | truncated))
            steps = calls * self.num_envs
        else:
            n = max(self.num_envs, round(target_steps / self.calibration_length))
            for _ in self.runner.run(self._policy, n, self._next_seed):
                pass
            self._next_seed += n
            self.episodes += n
            steps = self.runner.stats.steps
        self.steps += steps
        return steps / (time.perf_counter() - begin)

    @property
    def mean_episode_length(self) -> float:
        """Over every chunk, warm-up included (SyncVectorEnv's: approximate, since its episodes
        run across chunk boundaries)."""
        return self.steps / self.episodes if self.episodes else float("nan")

    def close(self) -> None:
        for stepper in (self.vec, self.runner):
            if stepper is not None:
                stepper.close()


# ---------------------------------------------------------------------------------------------
# Policies


def random_model(obs_dim: int, act_dim: int, config, window: int, seed: int):
    """A random-init MTM with states, returns and actions of these dimensions: its speed does not
    depend on the weights (episode lengths do: an untrained Hopper falls within tens of steps)."""
    import numpy as np
    import torch

    from mtm.model.network import MTM
    from mtm.model.tokenizers import ContinuousTokenizer

    toks = {
        "states": ContinuousTokenizer(obs_dim, np.zeros(obs_dim), np.ones(obs_dim), name="states"),
        "returns": ContinuousTokenizer(1, [0.0], [1.0], name="returns"),
        "actions": ContinuousTokenizer(act_dim, np.zeros(act_dim), np.ones(act_dim), name="actions"),
    }
    torch.manual_seed(seed)
    return MTM(config, toks, window).eval()


def minimal_metadata(action_space: Any):
    """What MTMPolicy reads of a checkpoint's metadata: the rtg convention, the training returns
    (for the rcbc target) and the action bounds (for clipping)."""
    import numpy as np

    from mtm.run_metadata import DataSummary, ReturnSummary, ReturnToGo, RunMetadata

    bounds = {"low": np.asarray(action_space.low).tolist(), "high": np.asarray(action_space.high).tolist()}
    return RunMetadata(rtg=ReturnToGo(kind="average", gamma=1.0, horizon=1000),
                       returns=ReturnSummary(min=0.0, mean=500.0, max=1000.0, typical_max=1000.0, outliers_above=0),
                       data_info=DataSummary(action_space=bounds))


def steady_policy(model: Any, metadata: Any, observations: Any, **settings: Any):
    """An MTMPolicy for len(observations) envs that has acted until its window is full: every
    act() from here runs at c = L - 1, the steady state of an episode (what latencies measure).
    `metadata`: a RunMetadata."""
    from mtm.policy import MTMPolicy

    policy = MTMPolicy(model, metadata, num_envs=len(observations), **settings)
    policy.reset()
    for _ in range(policy.window):
        policy.act(observations)
    return policy


def steady_inputs(policy: Any) -> tuple[dict, Any, Any]:
    """(batch, visible, queries) of one steady-state act() of `policy` (c = L - 1), on its own
    buffers, exactly as act() passes them to the model (MTMPolicy.model_inputs)."""
    return policy.model_inputs()


def predict_call(policy: Any, model: Any = None) -> Callable[[], dict]:
    """The network call of one steady-state act() of `policy`, under its autocast: the model's
    share of act(). `model`: another network with the same inputs (e.g. a bf16 copy)."""
    import torch

    model = policy.model if model is None else model
    batch, visible, queries = steady_inputs(policy)

    @torch.no_grad()
    def call() -> dict:
        with policy.autocast:
            return model.predict(batch, visible, heads=("actions",), queries=queries)

    return call


# ---------------------------------------------------------------------------------------------
# Data


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

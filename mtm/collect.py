"""`mtm collect`: run a policy in a gymnasium env, writing episodes to a native file as they finish.

Ctrl-C keeps every finished episode: the file is committed with them, and its description names
their reset seeds (with K envs the ones kept need not be a contiguous range).
"""

from __future__ import annotations

import dataclasses
import math
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from mtm.version import __version__
from envs.references import reference_scores
from envs.tasks import TASKS, envs_with_expert
from mtm.data.episode import DatasetInfo
from mtm.data.formats.native import EpisodeWriter
from mtm.data.spaces import space_to_dict
from mtm.errors import ConfigError
from mtm.interrupts import signal_of, stop_signals_held
from mtm.io import check_output_path
from mtm.rollout import EpisodeRunner, ExpertPolicy, PixelSpec, Policy, RandomPolicy, RolloutStats, check_env_id


@dataclass(frozen=True)
class CollectOptions:
    env_id: str
    policy: str  # a name in POLICIES
    episodes: int
    output: Path
    num_envs: int = 8
    seed: int = 0
    # Expert action-noise std; several values split the episodes into equal consecutive blocks.
    noise: tuple[float, ...] = ()
    pixels: PixelSpec | None = None
    overwrite: bool = False


@dataclass
class CollectResult:
    path: Path | None  # None when interrupted before the first episode finished (nothing written)
    episodes_requested: int
    returns: list[float] = field(default_factory=list)
    steps: int = 0
    interrupted: bool = False
    stop_signal: int = signal.SIGINT  # what interrupted it: Ctrl-C or SIGTERM (the exit code follows it)
    stats: RolloutStats = field(default_factory=RolloutStats)

    @property
    def episodes(self) -> int:
        return len(self.returns)


@dataclass(frozen=True)
class PolicyContext:
    """What a policy builder (POLICIES) may use."""

    env_id: str
    action_space: Any
    seed: int
    episodes: int
    noise: tuple[float, ...]
    envs: tuple[Any, ...] = ()  # the runner's sub-environments, for privileged experts


def parse_noise(text: str | None) -> tuple[float, ...]:
    """'0,0.1,0.3' -> (0.0, 0.1, 0.3); every value must be a finite number >= 0."""
    if text is None or not text.strip():
        return ()
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise ConfigError(f"--noise: {part.strip()!r} is not a number (expected e.g. 0.1 or 0,0.1,0.3)") from None
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"--noise: values must be finite and >= 0, got {part.strip()}")
        values.append(value)
    return tuple(values)


def noise_schedule(noise: tuple[float, ...], episodes: int) -> Callable[[int], float]:
    """Episode index -> noise std: equal consecutive blocks, one per value (the last may be shorter)."""
    if not noise:
        return lambda _episode: 0.0
    return lambda episode: noise[min(episode * len(noise) // episodes, len(noise) - 1)]


def _random_policy(ctx: PolicyContext) -> tuple[Policy, str]:
    if ctx.noise:
        raise ConfigError("--noise applies to --policy expert only")
    return RandomPolicy(ctx.action_space, seed=ctx.seed), "uniform random actions"


def _expert_policy(ctx: PolicyContext) -> tuple[Policy, str]:
    spec = TASKS.get(ctx.env_id)
    if spec is None or spec.expert is None:
        raise ConfigError(f"{ctx.env_id} has no scripted expert; envs with one: {', '.join(envs_with_expert())}")
    noise = ctx.noise or (0.0,)
    policy = ExpertPolicy.for_task(spec, ctx.envs, ctx.action_space, noise_schedule(noise, ctx.episodes), seed=ctx.seed)
    blocks = "" if len(noise) == 1 else " in equal blocks"
    return policy, f"scripted expert, action noise std {', '.join(f'{n:g}' for n in noise)}{blocks}"


# name -> builder returning (policy, description). A new kind of policy is one entry here.
POLICIES: dict[str, Callable[[PolicyContext], tuple[Policy, str]]] = {
    "random": _random_policy,
    "expert": _expert_policy,
}


def _validate(options: CollectOptions) -> None:
    if options.episodes <= 0:
        raise ConfigError(f"--episodes must be positive, got {options.episodes}")
    if options.num_envs <= 0:
        raise ConfigError(f"--num-envs must be positive, got {options.num_envs}")
    if options.policy not in POLICIES:
        raise ConfigError(f"unknown policy {options.policy!r}; choose one of: {', '.join(POLICIES)}")
    if options.pixels is not None and options.pixels.size <= 0:
        raise ConfigError(f"--image-size must be positive, got {options.pixels.size}")
    if len(options.noise) > options.episodes:
        raise ConfigError(f"--noise has {len(options.noise)} values but only {options.episodes} episodes are collected")


def seed_ranges(seeds: list[int]) -> list[list[int]]:
    """[3, 0, 1, 2, 5, 7, 8] -> [[0, 3], [5, 5], [7, 8]]: the seeds as sorted inclusive ranges."""
    runs: list[list[int]] = []
    for seed in sorted(set(seeds)):
        if runs and seed == runs[-1][1] + 1:
            runs[-1][1] = seed
        else:
            runs.append([seed, seed])
    return runs


def describe_seeds(seeds: list[int]) -> str:
    """[3, 0, 1, 2, 5, 7, 8] -> "0..3, 5, 7..8"."""
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in seed_ranges(seeds))


def _source(options: CollectOptions, description: str, seeds: str) -> str:
    return f"mtm collect: {description} on {options.env_id}, reset seeds {seeds}"


def _dataset_info(options: CollectOptions, runner: EpisodeRunner, description: str) -> DatasetInfo:
    ref_min, ref_max = reference_scores(options.env_id) or (None, None)
    last_seed = options.seed + options.episodes - 1
    return DatasetInfo(
        source_format="collect",
        source=_source(options, description, f"{options.seed}..{last_seed}"),
        env_id=options.env_id,
        ref_min_score=ref_min, ref_max_score=ref_max,
        observation_space=space_to_dict(runner.observation_space),
        action_space=space_to_dict(runner.action_space),
        extra={
            "policy": options.policy,
            "policy_description": description,
            "noise": list(options.noise),
            "seed": options.seed,
            "num_envs": runner.num_envs,
            "episodes_requested": options.episodes,
            # The episodes' reset seeds, for `mtm eval` to warn when it would start where they did.
            "reset_seeds": [[options.seed, last_seed]],
            "pixels": None if options.pixels is None else options.pixels.to_dict(),
            "mtm_version": __version__,
        },
    )


def collect(options: CollectOptions, progress: bool = True) -> CollectResult:
    """Run the collection described by ``options``; see the module docstring for Ctrl-C."""
    _validate(options)
    check_output_path(options.output, options.overwrite)  # fail before any simulation
    check_env_id(options.env_id)
    result = CollectResult(path=None, episodes_requested=options.episodes)
    with EpisodeRunner(options.env_id, min(options.num_envs, options.episodes), pixels=options.pixels) as runner:
        ctx = PolicyContext(options.env_id, runner.action_space, options.seed, options.episodes, options.noise,
                            envs=tuple(runner.envs))
        policy, description = POLICIES[options.policy](ctx)  # a known name: _validate checked it
        info = _dataset_info(options, runner, description)
        bar = tqdm(total=options.episodes, unit="ep", desc=f"collect {options.env_id}", disable=not progress)
        return_sum = 0.0
        seeds: list[int] = []
        try:
            with EpisodeWriter(options.output, info, overwrite=options.overwrite) as writer:
                try:
                    for _, episode in runner.run(policy, options.episodes, options.seed):
                        with stop_signals_held():  # the file and the tally must agree: never half an episode
                            writer.add(episode)
                            seeds.append(episode.seed)
                            result.returns.append(episode.episode_return)
                            result.steps += episode.length
                        return_sum += episode.episode_return
                        bar.update(1)
                        bar.set_postfix(mean_return=f"{return_sum / len(result.returns):.2f}", refresh=False)
                except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM (mtm.interrupts)
                    result.interrupted, result.stop_signal = True, signal_of(stop)
                    if writer.num_episodes == 0:
                        writer.abort()  # nothing worth keeping; leaving the block then commits nothing
                    else:  # what the file really holds
                        note = f" (interrupted after {len(seeds)} of {options.episodes} episodes)"
                        source = _source(options, description, describe_seeds(seeds)) + note
                        writer.update_info(dataclasses.replace(info, source=source, extra={
                            **info.extra, "interrupted": True, "reset_seeds": seed_ranges(seeds)}))
            if writer.num_episodes:
                result.path = writer.path
        finally:
            bar.close()
        result.stats = runner.stats
    return result

"""Run whole episodes in K environments at once: data collection and evaluation share this.

Episode ``i`` of a run always starts with ``env.reset(seed=seed + i)`` and the policy is told which
episode each sub-environment runs, so a run's episodes do not depend on K (for a deterministic
policy, and for one that seeds its noise per episode, as RandomPolicy and ExpertPolicy do).

Not gymnasium's vector envs: they step every sub-environment on every call, so at the end of a run,
with fewer episodes left than sub-environments, they simulate episodes only to throw them away.
This runner steps only the envs with an episode in progress; on 2 cores it is as fast as
SyncVectorEnv, which is also a Python loop over the envs.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence, Union

import gymnasium as gym
from gymnasium import spaces
import numpy as np

from envs import register_envs
from envs.tasks import make_pixel_env
from mtm.data.episode import STATE_KEY, Episode
from mtm.errors import ConfigError
from mtm.io import short_reason

Observation = Union[np.ndarray, dict[str, np.ndarray]]


class Policy(Protocol):
    """A batched policy over the K sub-environments of a runner.

    ``reset``: sub-environments ``env_indices`` (slots 0..K-1) start the run-wide episodes
    ``episode_indices`` (a policy with per-episode randomness seeds it from them). ``act``: one
    stacked observation row (an array, or a dict of arrays) per slot in use; rows of slots with no
    episode left hold their last observation and their actions are ignored.
    Optional ``observe(rewards)``: the (rows,) rewards of the step just taken (0 for idle rows),
    before any slot is reset; return-conditioned policies count the return received with it.
    """

    def reset(self, env_indices: np.ndarray, episode_indices: np.ndarray) -> None: ...

    def act(self, observations: Observation) -> np.ndarray: ...


@dataclass(frozen=True)
class PixelSpec:
    """Render observations as {"state", "pixels"} (see envs.pixels); stored with datasets."""

    size: int = 64
    camera: int | str | dict[str, Any] | None = None  # None: the task's own view

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "camera": self.camera}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "PixelSpec | None":
        return None if d is None else cls(size=int(d["size"]), camera=d.get("camera"))


def check_env_id(env_id: str) -> None:
    """Raise ConfigError, suggesting close registered ids, if gymnasium does not know ``env_id``."""
    register_envs()  # mtm's own ids (mtm/...); gymnasium 1.x loads no plugin entry points itself
    try:
        gym.spec(env_id)
        return
    except (gym.error.Error, ModuleNotFoundError, ValueError):
        pass
    by_lower = {k.lower(): k for k in gym.registry}
    close = [by_lower[m] for m in difflib.get_close_matches(env_id.lower(), list(by_lower), n=3, cutoff=0.6)]
    hint = f"; did you mean {', '.join(close)}?" if close else "; see gymnasium.pprint_registry()"
    raise ConfigError(f"unknown environment id {env_id!r}{hint}")


def make_env(env_id: str, env_kwargs: dict[str, Any] | None = None, pixels: PixelSpec | None = None):
    """One gymnasium env, optionally with pixel observations. Unknown ids raise ConfigError."""
    check_env_id(env_id)
    kwargs = dict(env_kwargs or {})
    try:
        if pixels is None:
            return gym.make(env_id, **kwargs)
        return make_pixel_env(env_id, size=pixels.size, camera=pixels.camera, **kwargs)
    # Registered but unusable here (Reacher-v2 needs mujoco-py), or no pixel support: the user's
    # choice of env, so one line rather than a traceback.
    except (gym.error.Error, ImportError, ValueError) as exc:
        raise ConfigError(f"cannot make {env_id}: {short_reason(exc)}") from None


def _finite_box(action_space: Any) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(action_space, spaces.Box) or not (
        np.isfinite(action_space.low).all() and np.isfinite(action_space.high).all()
    ):
        raise ConfigError(f"this policy needs a bounded Box action space, got {action_space}")
    return action_space.low.astype(np.float64), action_space.high.astype(np.float64)


def _episode_rng(seed: int, episode_index: int, stream: int) -> np.random.Generator:
    # gymnasium seeds the env with default_rng(seed + i); mixing in the index and a stream id as
    # separate words keeps the policy's noise independent of the env's own random draws.
    return np.random.default_rng([seed, episode_index, stream])


class RandomPolicy:
    """Uniform actions (a bounded Box or a Discrete space), drawn from a per-episode random stream."""

    STREAM = 1

    def __init__(self, action_space: Any, seed: int = 0) -> None:
        if isinstance(action_space, spaces.Discrete):
            start, n = int(action_space.start), int(action_space.n)
            self._draw = lambda rng: rng.integers(start, start + n)
            self.dtype = np.int64
        else:
            low, high = _finite_box(action_space)
            self._draw = lambda rng: rng.uniform(low, high)
            self.dtype = np.float32
        self.seed = seed
        self._rngs: dict[int, np.random.Generator] = {}

    def reset(self, env_indices: np.ndarray, episode_indices: np.ndarray) -> None:
        for slot, episode in zip(env_indices, episode_indices):
            self._rngs[int(slot)] = _episode_rng(self.seed, int(episode), self.STREAM)

    def act(self, observations: Observation) -> np.ndarray:
        n = _batch_size(observations)
        return np.stack([self._draw(self._rngs[k]) for k in range(n)]).astype(self.dtype)


class ExpertPolicy:
    """A scripted expert (envs.experts) as a Policy, with optional Gaussian action noise.

    ``noise_std``: the noise std in action units, or a function of the episode index (for datasets
    that mix qualities). Noisy actions are clipped to the action space, so the recorded action is the
    one the simulator executed. ``expert_inputs``: for a privileged expert (the observation hides
    what it needs, e.g. mtm/ReacherPixels-v0's target), a function returning its (K, dim) input for
    every sub-environment, read from the simulators; the observations are then ignored.
    """

    STREAM = 2

    def __init__(self, expert: Callable[[np.ndarray], np.ndarray], action_space: Any,
                 noise_std: float | Callable[[int], float] = 0.0, seed: int = 0,
                 expert_inputs: Callable[[], np.ndarray] | None = None) -> None:
        self.expert = expert
        self.expert_inputs = expert_inputs
        self.low, self.high = _finite_box(action_space)
        self.noise_for = noise_std if callable(noise_std) else (lambda _episode, std=float(noise_std): std)
        self.seed = seed
        self._noise: dict[int, tuple[float, np.random.Generator]] = {}

    @classmethod
    def for_task(cls, spec: Any, envs: Sequence[Any], action_space: Any,
                 noise_std: float | Callable[[int], float] = 0.0, seed: int = 0) -> "ExpertPolicy":
        """The scripted expert of an envs.tasks.TaskSpec acting in ``envs`` (an EpisodeRunner's,
        whose row k is sub-environment k); privileged when the task defines expert_observation."""
        read = spec.expert_observation
        inputs = None if read is None else (lambda: np.stack([read(env) for env in envs]))
        return cls(spec.expert(), action_space, noise_std, seed, expert_inputs=inputs)

    def reset(self, env_indices: np.ndarray, episode_indices: np.ndarray) -> None:
        for slot, episode in zip(env_indices, episode_indices):
            std = float(self.noise_for(int(episode)))
            self._noise[int(slot)] = (std, _episode_rng(self.seed, int(episode), self.STREAM))

    def act(self, observations: Observation) -> np.ndarray:
        if self.expert_inputs is not None:
            # Rows beyond the batch belong to sub-environments this run does not use.
            state = self.expert_inputs()[: _batch_size(observations)]
        else:
            state = observations[STATE_KEY] if isinstance(observations, dict) else observations
        actions = np.asarray(self.expert(state), dtype=np.float64)
        for k in range(actions.shape[0]):
            std, rng = self._noise.get(k, (0.0, None))
            if std > 0.0:
                actions[k] += std * rng.standard_normal(actions.shape[1:])
        return np.clip(actions, self.low, self.high).astype(np.float32)


def _batch_size(observations: Observation) -> int:
    first = next(iter(observations.values())) if isinstance(observations, dict) else observations
    return int(first.shape[0])


@dataclass
class RolloutStats:
    episodes: int = 0
    steps: int = 0
    seconds: float = 0.0  # time spent inside the runner (simulation + policy), not the consumer's

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Recording:
    """The episode a sub-environment is running, step by step."""

    index: int
    seed: int
    observations: list[Observation]
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    terminations: list[bool] = field(default_factory=list)
    truncations: list[bool] = field(default_factory=list)

    def to_episode(self) -> Episode:
        stacked = _stack(self.observations)
        return Episode(
            observations=stacked if isinstance(stacked, dict) else {STATE_KEY: stacked},
            actions=np.stack(self.actions),
            rewards=np.asarray(self.rewards, dtype=np.float64),
            terminations=np.asarray(self.terminations, dtype=bool),
            truncations=np.asarray(self.truncations, dtype=bool),
            seed=self.seed,
        )


def _copy(observation: Observation) -> Observation:
    # Some envs return views of internal buffers that the next step overwrites.
    if isinstance(observation, dict):
        return {k: np.array(v, copy=True) for k, v in observation.items()}
    return np.array(observation, copy=True)


def _stack(observations: list[Observation]) -> Observation:
    if isinstance(observations[0], dict):
        return {k: np.stack([o[k] for o in observations]) for k in observations[0]}
    return np.stack(observations)


class EpisodeRunner:
    """K sub-environments that run the episodes of a run in order, each stepped only while busy.

    ``run`` yields ``(episode_index, Episode)`` as episodes finish: in the order they finish, ties
    broken by index, so the order is deterministic for a given K (0, 1, 2, ... for tasks with
    fixed-length episodes). Episodes carry T+1 observation rows and ``seed = seed + episode_index``.
    """

    def __init__(self, env_id: str, num_envs: int, *, env_kwargs: dict[str, Any] | None = None,
                 pixels: PixelSpec | None = None) -> None:
        if num_envs <= 0:
            raise ConfigError(f"the number of environments must be positive, got {num_envs}")
        self.env_id = env_id
        self.envs: list[Any] = []
        try:
            for _ in range(num_envs):
                self.envs.append(make_env(env_id, env_kwargs, pixels))
        except BaseException:
            self.close()
            raise
        self.observation_space = self.envs[0].observation_space
        self.action_space = self.envs[0].action_space
        self.stats = RolloutStats()

    @property
    def num_envs(self) -> int:
        return len(self.envs)

    def run(self, policy: Policy, num_episodes: int, seed: int, *,
            on_step: Callable[[int, Any], None] | None = None) -> Iterator[tuple[int, Episode]]:
        """Run exactly ``num_episodes`` episodes; ``on_step(episode_index, env)`` is called after
        every reset and step of a sub-environment (e.g. to render video frames)."""
        if num_episodes < 0:
            raise ConfigError(f"the number of episodes must be >= 0, got {num_episodes}")
        self.stats = RolloutStats()
        slots = min(self.num_envs, num_episodes)
        if slots == 0:
            return
        resumed = time.perf_counter()
        recordings: list[_Recording | None] = [None] * slots
        current: list[Observation] = [None] * slots  # type: ignore[list-item]
        next_episode = 0

        def start(free: list[int]) -> None:
            nonlocal next_episode
            started, indices = [], []
            for k in free:
                if next_episode >= num_episodes:
                    recordings[k] = None
                    continue
                obs = _copy(self.envs[k].reset(seed=seed + next_episode)[0])
                recordings[k] = _Recording(next_episode, seed + next_episode, [obs])
                current[k] = obs
                started.append(k)
                indices.append(next_episode)
                if on_step is not None:
                    on_step(next_episode, self.envs[k])
                next_episode += 1
            if started:
                policy.reset(np.asarray(started), np.asarray(indices))

        observe = getattr(policy, "observe", None)
        start(list(range(slots)))
        while any(r is not None for r in recordings):
            # A copy: the recorded rows must not change if the policy reuses its output buffer.
            actions = np.array(policy.act(_stack(current)), copy=True)
            expected = (slots,) + self.action_space.shape
            if actions.shape != expected:
                raise ValueError(f"policy returned actions of shape {actions.shape}, expected {expected}")
            finished: list[int] = []
            rewards = np.zeros(slots)
            for k, rec in enumerate(recordings):
                if rec is None:
                    continue
                obs, reward, terminated, truncated, _ = self.envs[k].step(actions[k])
                obs = _copy(obs)
                rec.observations.append(obs)
                rec.actions.append(actions[k])
                rec.rewards.append(float(reward))
                rewards[k] = reward
                rec.terminations.append(bool(terminated))
                rec.truncations.append(bool(truncated))
                current[k] = obs
                self.stats.steps += 1
                if on_step is not None:
                    on_step(rec.index, self.envs[k])
                if terminated or truncated:
                    finished.append(k)
            if observe is not None:
                observe(rewards)
            if not finished:
                continue
            done = sorted((recordings[k] for k in finished), key=lambda r: r.index)  # type: ignore[union-attr]
            start(finished)
            for rec in done:
                self.stats.episodes += 1
                self.stats.seconds += time.perf_counter() - resumed
                yield rec.index, rec.to_episode()
                resumed = time.perf_counter()
        self.stats.seconds += time.perf_counter() - resumed

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []

    def __enter__(self) -> "EpisodeRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

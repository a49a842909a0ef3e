"""Replay recorded data through the simulator: frames of a dataset's first episodes (`mtm inspect --video`).

A file that stores MuJoCo's state before each step (D4RL's ``infos/qpos`` and ``infos/qvel``) can be
drawn without its policy: for each step the env's state is set from the recorded qpos/qvel and a
frame rendered with mtm.video's RobotRenderer (the camera, floor and quality of ``mtm eval --video``).
Frame t shows the state before step t; its caption's return is the reward received before it.
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np

from mtm.errors import ConfigError
from mtm.video import MAX_VIDEO_FPS, EpisodeFrames, RobotRenderer, mujoco_sim

STATE_KEYS = ("infos/qpos", "infos/qvel")


def recorded_states(source: Any, rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(qpos, qvel) of a D4RL source's first ``rows`` transitions (all by default), one row each;
    ConfigError (one line) when the file has none."""
    from mtm.data.formats.d4rl import D4RLSource

    where = getattr(source, "path", None) or source.info.source
    if not isinstance(source, D4RLSource):
        raise ConfigError(
            f"{where}: a {source.info.source_format} file stores no simulator state, so its episodes cannot be "
            f"replayed; replay needs a D4RL-layout file with infos/qpos and infos/qvel (MuJoCo's state before "
            f"each step, as in ../shared/datasets)")
    with h5py.File(source.path, "r") as f:
        missing = [k for k in STATE_KEYS if not isinstance(f.get(k), h5py.Dataset)]
        if missing:
            raise ConfigError(
                f"{where}: no {' or '.join(missing)} in the file, so its episodes cannot be replayed; replay "
                f"needs MuJoCo's state before each step, recorded as infos/qpos and infos/qvel")
        total = source.flat_arrays().observations.shape[0]
        for name in STATE_KEYS:
            shape = f[name].shape
            if len(shape) != 2 or shape[0] != total:
                raise ConfigError(f"{where}: {name} has shape {shape}; replay needs one row per transition ({total})")
        stop = total if rows is None else min(rows, total)  # only what is replayed is read
        return tuple(np.asarray(f[name][:stop], np.float64) for name in STATE_KEYS)


def replay_env_id(source: Any, env_id: str | None) -> str:
    """The env to replay in: ``env_id`` (--env) if given, else the file's own; ConfigError if neither."""
    if env_id:
        return env_id
    if source.info.env_id:
        return str(source.info.env_id)
    where = getattr(source, "path", None) or source.info.source
    raise ConfigError(f"{where}: the file names no environment to replay it in; pass --env, e.g. --env Hopper-v5")


def set_state(env: Any, qpos: np.ndarray, qvel: np.ndarray) -> None:
    """Put ``env``'s simulator in the recorded state (positions derived by mj_forward, no time stepped)."""
    import mujoco

    model, data = mujoco_sim(env)
    data.qpos[:] = qpos
    data.qvel[:] = qvel
    mujoco.mj_forward(model, data)


def replay_frames(source: Any, env_id: str | None = None, episodes: int = 1, size: int = 256,
                  quality: str = "fast") -> tuple[list[EpisodeFrames], float, str | None]:
    """Frames of ``source``'s first ``episodes`` episodes, their env's frame rate, and the camera's description."""
    from mtm.rollout import make_env

    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    from mtm.data.formats.d4rl import D4RLSource

    flat = source.flat_arrays() if isinstance(source, D4RLSource) else None  # others: recorded_states refuses
    shown = min(episodes, len(source))
    qpos, qvel = recorded_states(source, None if flat is None else int(flat.starts[shown - 1] + flat.lengths[shown - 1]))
    env_id = replay_env_id(source, env_id)
    env = make_env(env_id)
    try:
        env.reset(seed=0)
        model, _ = mujoco_sim(env)
        if qpos.shape[1] != model.nq or qvel.shape[1] != model.nv:
            raise ConfigError(f"{source.path}: the recorded state (qpos {qpos.shape[1]}, qvel {qvel.shape[1]} values) "
                              f"does not fit {env_id} (nq {model.nq}, nv {model.nv}); pass the env it was "
                              f"recorded in with --env")
        env_fps = float(env.metadata.get("render_fps") or MAX_VIDEO_FPS)
        renderer = RobotRenderer(env, size, quality)
        recorded = []
        try:
            for i in range(shown):
                start, length = int(flat.starts[i]), int(flat.lengths[i])
                frames = []
                for t in range(start, start + length):
                    set_state(env, qpos[t], qvel[t])
                    frames.append(renderer.render())
                returns = None
                if flat.rewards is not None:
                    rewards = flat.rewards[start:start + length - 1].astype(np.float64)
                    returns = np.concatenate([[0.0], np.cumsum(rewards)])
                recorded.append(EpisodeFrames(i, frames, returns, terminated=False))
        finally:
            camera = renderer.camera_description
            renderer.close()
    finally:
        env.close()
    return recorded, env_fps, camera

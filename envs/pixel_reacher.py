"""mtm/ReacherPixels-v0: Reacher-v5 where only the image shows where the target is.

Reacher-v5's observation holds the target and the fingertip - target vector, so a state-only model
never needs pixels. Here the state is the arm's own 6-D proprioception and a top-down frame shows
the target as a red disc:

    observation {"state":  (6,) float32   cos(q0), cos(q1), sin(q0), sin(q1), dq0, dq1
                 "pixels": (S, S, 3) uint8 the arena seen from straight above (S = image_size)}

Dynamics, episode length and target distribution are Reacher-v5's; the reward is not. Reacher-v5's
is mostly the torque cost, so a target-blind policy that holds the arm still scores ~80 % of the way
from random to expert. Here it is 1 per step with the fingertip on the target disc (distance <
TARGET_RADIUS), so random and target-blind policies score ~0, the expert ~30 of 50.

The target sphere is drawn larger than in reacher.xml (radius 0.009 -> 0.02, about 5 px across at
64 px); it has no contacts and its mass was fixed when the model compiled, so the change is only
visual. The scripted expert reads the target from ``reacher_observation`` (privileged, through
TaskSpec.expert_observation; for data collection only).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.pixels import Camera, PixelObservation

ENV_ID = "mtm/ReacherPixels-v0"
MAX_EPISODE_STEPS = 50
# Indices of Reacher-v5's observation that stay in the state: cos q (0, 1), sin q (2, 3), dq (6, 7).
# Dropped: the target position (4, 5) and fingertip - target (8, 9).
STATE_INDICES = (0, 1, 2, 3, 6, 7)
TARGET_RADIUS = 0.02

# Straight down from 0.6 m: the +-0.25 m in view hold every target (radius < 0.2) and the whole arm
# (reach 0.21). The same view as Reacher-v5's pixel_camera in envs.tasks.
TOP_DOWN_CAMERA: dict[str, Any] = {"distance": 0.6, "azimuth": 90.0, "elevation": -90.0, "lookat": (0.0, 0.0, 0.0),
                                   "trackbodyid": -1}


class OnTargetReward(gym.Wrapper):
    """Reward 1 per step with the fingertip on the target disc, else 0 (Reacher-v5's own reward
    terms stay in info: reward_dist = -distance, reward_ctrl)."""

    def step(self, action):
        observation, _, terminated, truncated, info = self.env.step(action)
        reward = float(-info["reward_dist"] < TARGET_RADIUS)
        return observation, reward, terminated, truncated, info


class HideTarget(gym.ObservationWrapper):
    """Keep only the arm's joint angles and velocities of Reacher-v5's observation."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        low, high = env.observation_space.low, env.observation_space.high
        index = list(STATE_INDICES)
        self.observation_space = spaces.Box(low[index], high[index], dtype=np.float64)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[list(STATE_INDICES)]


def make_reacher_pixels(image_size: int = 64, camera: Camera = None, render_mode: str | None = "rgb_array",
                        **reacher_kwargs: Any) -> gym.Env:
    """The env behind ``gym.make("mtm/ReacherPixels-v0", image_size=64)``. ``camera`` overrides the
    top-down view (envs.pixels.PixelObservation); ``reacher_kwargs`` go to gymnasium's Reacher-v5 env
    (e.g. reward weights). ``render()`` returns a frame of the observation's size."""
    # late: envs imports nothing heavy at import time (envs/__init__.py)
    from gymnasium.envs.mujoco.reacher_v5 import ReacherEnv

    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"{ENV_ID} renders its observation offscreen: render_mode must be 'rgb_array', "
                         f"got {render_mode!r}")
    # Built directly, not with gym.make("Reacher-v5"): gym.make of this id adds the time limit
    # and checkers once, outside, and a second TimeLimit inside would be redundant.
    reacher = ReacherEnv(render_mode="rgb_array", **reacher_kwargs)
    target = reacher.model.geom("target")
    target.size[0] = TARGET_RADIUS
    target.rbound[0] = TARGET_RADIUS  # the bounding sphere the renderer culls with
    try:
        view = TOP_DOWN_CAMERA if camera is None else camera
        return PixelObservation(HideTarget(OnTargetReward(reacher)), size=image_size, camera=view)
    except BaseException:
        reacher.close()
        raise


def reacher_observation(env: gym.Env) -> np.ndarray:
    """The full 10-D Reacher-v5 observation (target included) of a ReacherPixels env, from its simulator."""
    return np.asarray(env.unwrapped._get_obs(), dtype=np.float64)


def register() -> None:
    """Add ENV_ID to gymnasium's registry (once; later calls change nothing)."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point=make_reacher_pixels, max_episode_steps=MAX_EPISODE_STEPS)

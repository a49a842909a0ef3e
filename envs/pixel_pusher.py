"""mtm/PusherPixels-v0: Pusher-v5 where only the image shows where the object is.

Pusher-v5's 23-D observation holds the object's and the goal's positions, so a state-only model
never needs pixels. Here the state is the arm's own proprioception and a frame from above shows the
object (a blue puck) and the goal (a red disc):

    observation {"state":  (17,) float32  joint angles (7), joint velocities (7), fingertip xyz (3)
                 "pixels": (S, S, 3) uint8 the table from above (S = image_size)}

``mtm/PusherPixels2Cam-v0`` adds a second camera, a view from the side of the table:
{"state", "pixels", "pixels_side"}; everything else is the same.

What differs from Pusher-v5, and why:

- The object's position (observation 17..19) is dropped, and so is the goal's (20..22): Pusher-v5's
  goal never moves (reset puts it at the same spot every episode), so it carries no information;
  it is drawn in every frame.
- Reward: the object-goal distance term of Pusher-v5 alone (``reward_near_weight`` and
  ``reward_control_weight`` are 0), i.e. -|object - goal| per step (3-D, so at least 0.048). With Pusher-v5's weights a
  policy that holds the arm still scores as well as one that pushes the object home (the control
  cost of moving outweighs the gain), so a blind model would look good.
- ``info["is_success"]``: the object's centre within GOAL_RADIUS of the goal's.
- The object weighs OBJECT_MASS (Pusher-v5: 8e-6 kg). MuJoCo softens a contact by the inverse mass
  of the bodies it touches, and at 8e-6 kg the arm's hand passes through the object instead of
  pushing it (measured: 6 cm of penetration, the object moving 2 mm). The object's look, size,
  damping and reset distribution are Pusher-v5's, its colour aside (white -> blue, for contrast
  with the light table at 64 px).

Episodes last Pusher-v5's 100 steps (5 s); the scripted expert (envs.experts.PusherExpert) has the
object at the goal after about 70 and keeps it there. It reads the object from the simulator
(``pusher_expert_input``, privileged, through TaskSpec.expert_observation; data collection only).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from envs.experts import PUSHER_INPUT_DIM
from envs.pixels import Camera, ExtraViews, PixelObservation

ENV_ID = "mtm/PusherPixels-v0"
TWO_CAMERA_ENV_ID = "mtm/PusherPixels2Cam-v0"
MAX_EPISODE_STEPS = 100
SIDE_PIXELS_KEY = "pixels_side"
# Pusher-v5 observation: qpos[:7] (0..6), qvel[:7] (7..13), fingertip (14..16), object (17..19), goal (20..22).
STATE_INDICES = tuple(range(17))
GOAL_RADIUS = 0.05  # m, between the centres; the goal disc's radius is 0.08, the object's 0.05
OBJECT_MASS = 0.05  # kg: see the module doc (the expert was tuned with it; 0.2 kg halves its success)
OBJECT_RGBA = (0.1, 0.3, 1.0, 1.0)
# The fork's "cup": where the object's centre sits with the object against the cross bar (the
# cross bar capsule's radius 0.02 plus the object's 0.05, along the hand's x axis).
CUP_OFFSET = 0.07

# Straight down on the table: objects start in x 0.25..0.65, y -0.35..-0.05, the goal is at
# (0.45, -0.05); the arm's shoulder at (0, -0.6) is in view at the bottom of the frame.
TOP_CAMERA: dict[str, Any] = {"distance": 1.5, "azimuth": 90.0, "elevation": -90.0,
                              "lookat": (0.15, -0.25, -0.325), "trackbodyid": -1}
# From beyond the table's far end, looking back at the arm and 35 degrees down: the object's height
# and the arm's reach, which the view from above flattens.
SIDE_CAMERA: dict[str, Any] = {"distance": 1.5, "azimuth": 180.0, "elevation": -35.0,
                               "lookat": (0.3, -0.15, -0.325), "trackbodyid": -1}


class ObjectToGoal(gym.Wrapper):
    """Adds info["object_goal_distance"] and info["is_success"] (distance < GOAL_RADIUS)."""

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        distance = object_goal_distance(self.env)
        info = {**info, "object_goal_distance": distance, "is_success": bool(distance < GOAL_RADIUS)}
        return observation, reward, terminated, truncated, info


class HideObject(gym.ObservationWrapper):
    """Keep only the arm's joint state and fingertip of Pusher-v5's observation."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        index = list(STATE_INDICES)
        low, high = env.observation_space.low, env.observation_space.high
        self.observation_space = spaces.Box(low[index], high[index], dtype=np.float64)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[list(STATE_INDICES)]


def object_goal_distance(env: gym.Env) -> float:
    """Distance between the object's and the goal's centres in the table plane (the reward's is in
    3-D, and never below 0.048: the goal disc lies on the table, the object's centre 5 cm above)."""
    sim = env.unwrapped
    return float(np.linalg.norm(sim.get_body_com("object")[:2] - sim.get_body_com("goal")[:2]))


def object_at_goal(env: gym.Env) -> bool:
    """info["is_success"] of the current state (envs.tasks.TaskSpec.success)."""
    return object_goal_distance(env) < GOAL_RADIUS


def _weigh_and_paint_object(model: Any, data: Any) -> None:
    body = model.body("object").id
    scale = OBJECT_MASS / model.body_mass[body]
    model.body_mass[body] *= scale
    model.body_inertia[body] *= scale
    for geom in np.flatnonzero(model.geom_bodyid == body):
        if model.geom_rgba[geom, 3] > 0:  # the visible cylinder
            model.geom_rgba[geom] = OBJECT_RGBA
    # Recompute what the compiler derived from the masses (the contact softness among it).
    mujoco.mj_setConst(model, data)


def make_pusher_pixels(image_size: int = 64, camera: Camera = None, render_mode: str | None = "rgb_array",
                       side_camera: bool = False, **pusher_kwargs: Any) -> gym.Env:
    """The env behind ``gym.make("mtm/PusherPixels-v0", image_size=64)`` (and, with
    ``side_camera=True``, mtm/PusherPixels2Cam-v0). ``camera`` overrides the view from above;
    ``pusher_kwargs`` go to gymnasium's Pusher-v5 env (e.g. reward weights)."""
    from gymnasium.envs.mujoco.pusher_v5 import PusherEnv

    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"{ENV_ID} renders its observation offscreen: render_mode must be 'rgb_array', "
                         f"got {render_mode!r}")
    kwargs = {"reward_near_weight": 0.0, "reward_control_weight": 0.0, **pusher_kwargs}
    pusher = PusherEnv(render_mode="rgb_array", **kwargs)
    try:
        _weigh_and_paint_object(pusher.model, pusher.data)
        view = TOP_CAMERA if camera is None else camera
        env = PixelObservation(HideObject(ObjectToGoal(pusher)), size=image_size, camera=view)
        return ExtraViews(env, {SIDE_PIXELS_KEY: SIDE_CAMERA}) if side_camera else env
    except BaseException:
        pusher.close()
        raise


def pusher_expert_input(env: gym.Env) -> np.ndarray:
    """PusherExpert's (PUSHER_INPUT_DIM,) input row (envs.experts.PUSHER_INPUT_LAYOUT), read from
    the simulator of a PusherPixels env: the object's position included."""
    sim = env.unwrapped
    model, data = sim.model, sim.data
    hand = model.body("r_wrist_roll_link").id
    rotation = data.xmat[hand].reshape(3, 3)
    cup = data.xpos[hand] + CUP_OFFSET * rotation[:, 0]
    jac_cup = np.zeros((3, model.nv))
    jac_rot = np.zeros((3, model.nv))
    mujoco.mj_jac(model, data, jac_cup, jac_rot, cup, hand)
    row = np.concatenate([cup, rotation.ravel(), sim.get_body_com("object"), sim.get_body_com("goal"),
                          data.qpos[:7], data.qvel[:7], jac_cup[:, :7].ravel(), jac_rot[:, :7].ravel()])
    assert row.shape == (PUSHER_INPUT_DIM,)
    return row


def _make_two_camera(**kwargs: Any) -> gym.Env:
    return make_pusher_pixels(side_camera=True, **kwargs)


def register() -> None:
    """Add ENV_ID and TWO_CAMERA_ENV_ID to gymnasium's registry (once; later calls change nothing)."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point=make_pusher_pixels, max_episode_steps=MAX_EPISODE_STEPS)
    if TWO_CAMERA_ENV_ID not in gym.registry:
        gym.register(id=TWO_CAMERA_ENV_ID, entry_point=_make_two_camera, max_episode_steps=MAX_EPISODE_STEPS)

"""Pixel observations for MuJoCo tasks: {"state": the original vector, "pixels": an RGB frame}.

Keeping the state next to the frame lets one dataset serve both state-based and image-based
models, and lets scripted experts (which read the state) collect image datasets.

Offscreen rendering is much faster without shadows and multisampling (BENCHMARKS.md, Video
rendering); both are switched off before the first frame, because the offscreen buffer is made then.
"""

from __future__ import annotations

from typing import Any, Union

# MuJoCo's headless backend is already chosen: envs/__init__.py, which runs before this module.
import gymnasium as gym
import numpy as np
from gymnasium import spaces

STATE_KEY = "state"  # same key as mtm.data.episode.STATE_KEY; envs/ must not import mtm
PIXELS_KEY = "pixels"

Camera = Union[int, str, dict, None]


class PixelObservation(gym.ObservationWrapper):
    """Render a square uint8 RGB frame of ``size`` pixels after every reset and step.

    ``env`` must be a MuJoCo env made with ``render_mode="rgb_array"`` (``make_pixel_env`` does
    that). ``camera`` is a camera id (int) or name (str) of the model, or a dict of free-camera
    settings (distance, azimuth, elevation, lookat); None keeps the env's default view.
    """

    def __init__(self, env: gym.Env, size: int = 64, camera: Camera = None) -> None:
        super().__init__(env)
        if size <= 0:
            raise ValueError(f"image size must be positive, got {size}")
        if env.render_mode != "rgb_array":
            raise ValueError(f"pixel observations need an env made with render_mode='rgb_array', "
                             f"got {env.render_mode!r}")
        renderer = getattr(env.unwrapped, "mujoco_renderer", None)
        if renderer is None:
            raise ValueError(f"pixel observations support MuJoCo envs only, not {env.spec.id if env.spec else env}")
        if not isinstance(env.observation_space, spaces.Box):
            raise ValueError(f"pixel observations wrap a Box state space, got {env.observation_space}")
        if renderer.viewer is not None:
            raise ValueError("wrap the env in PixelObservation before its first render()")
        model = env.unwrapped.model
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0
        # The renderer reads its size and camera when it creates its first viewer, so setting them
        # here (before any render) works whatever the env was made with.
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, size)
        model.vis.global_.offheight = max(model.vis.global_.offheight, size)
        renderer.width = renderer.height = size
        if isinstance(camera, dict):
            renderer.camera_id = -1  # the free camera, placed by the settings below
            # gymnasium copies only ndarray values element-wise into the camera (lookat is an array).
            renderer.default_cam_config = {
                k: np.asarray(v, dtype=np.float64) if isinstance(v, (list, tuple)) else v
                for k, v in camera.items()
            }
        elif camera is not None:
            renderer.camera_id = _camera_id(model, camera)
        self.size = size
        self.camera = camera
        state = env.observation_space
        self.observation_space = spaces.Dict({
            STATE_KEY: spaces.Box(low=state.low.astype(np.float32), high=state.high.astype(np.float32),
                                  shape=state.shape, dtype=np.float32),
            PIXELS_KEY: spaces.Box(low=0, high=255, shape=(size, size, 3), dtype=np.uint8),
        })

    def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        frame = self.env.render()
        return {
            STATE_KEY: np.asarray(observation, dtype=np.float32),
            # The renderer reuses its buffer: copy so earlier frames of an episode stay intact.
            PIXELS_KEY: np.array(frame, dtype=np.uint8, copy=True),
        }

    def close(self) -> None:
        free_render_contexts(self.env.unwrapped)
        super().close()


class ExtraViews(gym.ObservationWrapper):
    """More cameras: adds one frame per view to a PixelObservation's dict, e.g. a side view next to
    the view from above (a robot seen by several cameras, as in robomimic or LeRobot data).

    ``views``: observation key -> free-camera settings (distance, azimuth, elevation, lookat, as
    for PixelObservation). Each frame is rendered by the env's own offscreen viewer, whose camera is
    moved to the view and back, so no second GL context is made.
    """

    def __init__(self, env: PixelObservation, views: dict[str, dict[str, Any]]) -> None:
        super().__init__(env)
        if not isinstance(env, PixelObservation):
            raise ValueError(f"extra views wrap a PixelObservation env, got {type(env).__name__}")
        taken = set(env.observation_space.spaces)
        for key, view in views.items():
            if key in taken:
                raise ValueError(f"view key {key!r} is already an observation key ({sorted(taken)})")
            if not isinstance(view, dict):
                raise ValueError(f"view {key!r} must be free-camera settings (a dict), got {view!r}")
        self.views = dict(views)
        frame = spaces.Box(low=0, high=255, shape=(env.size, env.size, 3), dtype=np.uint8)
        self.observation_space = spaces.Dict({**env.observation_space.spaces, **{k: frame for k in self.views}})

    def observation(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # PixelObservation has just rendered this step's main frame, so the viewer exists.
        viewer = self.env.unwrapped.mujoco_renderer.viewer
        camera = viewer.cam
        saved = (camera.type, camera.fixedcamid, camera.trackbodyid, camera.distance, camera.azimuth,
                 camera.elevation, camera.lookat.copy())
        frames = {}
        try:
            for key, view in self.views.items():
                _place_free_camera(camera, view)
                frames[key] = np.array(viewer.render(render_mode="rgb_array", camera_id=-1), dtype=np.uint8, copy=True)
        finally:
            (camera.type, camera.fixedcamid, camera.trackbodyid, camera.distance, camera.azimuth,
             camera.elevation) = saved[:6]
            camera.lookat[:] = saved[6]
        return {**observation, **frames}


def _place_free_camera(camera: Any, view: dict[str, Any]) -> None:
    import mujoco  # late: envs imports nothing heavy at import time (envs/__init__.py)

    camera.type = mujoco.mjtCamera.mjCAMERA_FREE
    camera.fixedcamid = -1
    camera.trackbodyid = -1
    for key in ("distance", "azimuth", "elevation"):
        if key in view:
            setattr(camera, key, float(view[key]))
    if "lookat" in view:
        camera.lookat[:] = np.asarray(view["lookat"], dtype=np.float64)


def free_render_contexts(sim: Any) -> None:
    """Free the MuJoCo render contexts of a gymnasium MuJoCo env's viewers, each in its own GL context.

    gymnasium's ``close()`` leaves each viewer's MjrContext to the garbage collector, whose
    ``mjr_freeContext`` then deletes GL objects by number (they start at 1 in every context) in
    whatever context is current: another env's or a video renderer's, whose later frames are then
    wrong (tests/test_video.py). Called before the env closes.
    """
    renderer = getattr(sim, "mujoco_renderer", None)
    viewers = getattr(renderer, "_viewers", None) or {}
    for viewer in viewers.values():
        context = getattr(viewer, "con", None)
        if context is not None and hasattr(viewer, "make_context_current"):
            viewer.make_context_current()
            context.free()


def _camera_id(model: Any, camera: int | str) -> int:
    import mujoco  # late: envs imports nothing heavy at import time (envs/__init__.py)

    if isinstance(camera, str):
        camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if camera_id < 0:
            names = [model.camera(i).name for i in range(model.ncam)]
            raise ValueError(f"the model has no camera named {camera!r}; cameras: {names or 'none'}")
        return camera_id
    if not -1 <= camera < model.ncam:
        raise ValueError(f"camera id {camera} is out of range: the model has {model.ncam} camera(s) (-1 = free camera)")
    return int(camera)

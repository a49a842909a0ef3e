"""The camera a video of a MuJoCo task is seen from: one that keeps the robot in view.

gymnasium's rgb_array view does not: the v5 locomotion tasks render from a free camera placed once
(a ``trackbodyid`` is ignored while the camera type stays free), which an expert cheetah leaves in
about two seconds. ``robot_camera`` takes the first of:

1. the task's own video camera (``envs.tasks.TaskSpec.video_camera``), e.g. Reacher's top-down view;
2. the model's own camera with mode ``track`` or ``trackcom`` (gymnasium's HalfCheetah, Hopper,
   Walker2d, Ant, Humanoid and Swimmer define one, "track"), which MuJoCo moves with the robot;
3. a free ``mjCAMERA_TRACKING`` camera on the robot's root body, from the side and a little above,
   at a distance where the robot fills about two thirds of the frame's height.

A following camera soon outruns the finite floor planes the models draw (HalfCheetah-v5's is 40 m
half-size, an expert cheetah covers ~300 m): ``FloorUnderRobot`` shifts the drawn floor with the
robot by whole periods of its texture, so the checkerboard stays put in the world.
"""

from __future__ import annotations

import math
from typing import Any

import mujoco  # after MUJOCO_GL's headless default: envs/__init__.py, run before this module, sets it
import numpy as np

from envs.tasks import TASKS

# Rule 3's view: from the side (looking along +y, so a robot running along +x crosses the frame left to
# right, as in the models' own "track" cameras) and 20 degrees above the horizon.
SIDE_AZIMUTH = 90.0
SIDE_ELEVATION = -20.0
# The robot's bounding sphere spans 1 / FIT of the vertical field of view: room for limbs that swing
# out of the pose the distance was measured in.
FIT = 1.5


def robot_root(model: Any) -> int:
    """The robot's root body: the heaviest direct child of the world that has degrees of freedom (the
    other moving ones are props, like Reacher's target on its two slide joints)."""
    candidates = [b for b in range(1, model.nbody)
                  if model.body_parentid[b] == 0 and model.body_dofnum[model.body_rootid == b].sum() > 0]
    if not candidates:
        raise ValueError("the model has no moving body to follow")
    return max(candidates, key=lambda b: float(model.body_subtreemass[b]))


def robot_geoms(model: Any, root: int | None = None) -> np.ndarray:
    """(ngeom,) bool: the geoms of the robot (every geom in its root body's subtree)."""
    root = robot_root(model) if root is None else root
    return model.body_rootid[model.geom_bodyid] == root


def robot_radius(model: Any, data: Any, root: int | None = None) -> float:
    """Radius of a sphere about the robot's centre of mass that holds its geoms in the current pose."""
    root = robot_root(model) if root is None else root
    geoms = np.flatnonzero(robot_geoms(model, root))
    centre = data.subtree_com[root]
    reach = np.linalg.norm(data.geom_xpos[geoms] - centre, axis=1) + model.geom_rbound[geoms]
    return float(reach.max()) if len(geoms) else float(model.stat.extent) / 2


def tracking_camera(model: Any, data: Any) -> Any:
    """Rule 3: a free camera that tracks the robot's root body at a distance that fits the robot's
    own size (``model.stat.extent`` covers the whole scene, floor included)."""
    root = robot_root(model)
    half_fov = math.radians(float(model.vis.global_.fovy)) / 2
    return free_camera({"trackbodyid": root, "azimuth": SIDE_AZIMUTH, "elevation": SIDE_ELEVATION,
                        "distance": FIT * robot_radius(model, data, root) / math.sin(half_fov),
                        "lookat": data.subtree_com[root]})


def free_camera(settings: dict[str, Any]) -> Any:
    """A camera from free-camera settings (distance, azimuth, elevation, lookat, trackbodyid), the
    form gymnasium's ``default_camera_config`` and envs.tasks use. ``trackbodyid >= 0`` tracks."""
    camera = mujoco.MjvCamera()
    track = int(settings.get("trackbodyid", -1))
    camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING if track >= 0 else mujoco.mjtCamera.mjCAMERA_FREE
    camera.trackbodyid = track
    for key in ("distance", "azimuth", "elevation"):
        if key in settings:
            setattr(camera, key, float(settings[key]))
    if "lookat" in settings:
        camera.lookat[:] = np.asarray(settings["lookat"], dtype=np.float64)
    return camera


def model_tracking_camera(model: Any) -> int | None:
    """Rule 2: the id of the model's camera that tracks a body ("track" first), or None."""
    modes = (mujoco.mjtCamLight.mjCAMLIGHT_TRACK, mujoco.mjtCamLight.mjCAMLIGHT_TRACKCOM)
    tracking = [c for c in range(model.ncam) if int(model.cam_mode[c]) in (int(m) for m in modes)]
    named = [c for c in tracking if model.camera(c).name == "track"]
    return (named or tracking or [None])[0]


def robot_camera(model: Any, data: Any, env_id: str | None = None) -> tuple[Any, str]:
    """The camera of a video of ``env_id`` (see the module doc) and a short description of it.
    ``data`` must hold a pose of the robot (after a reset): rule 3 measures the robot in it."""
    spec = TASKS.get(env_id) if env_id else None
    if spec is not None and spec.video_camera is not None:
        return free_camera(spec.video_camera), f"the task's own view ({env_id})"
    cam_id = model_tracking_camera(model)
    if cam_id is not None:
        camera = mujoco.MjvCamera()
        camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        camera.fixedcamid = cam_id
        mode = mujoco.mjtCamLight(int(model.cam_mode[cam_id])).name.removeprefix("mjCAMLIGHT_").lower()
        return camera, f"the model's camera {model.camera(cam_id).name!r} ({mode})"
    camera = tracking_camera(model, data)
    body = model.body(camera.trackbodyid).name or f"body {camera.trackbodyid}"
    return camera, f"a free camera tracking {body!r} at {camera.distance:.2f} m"


class FloorUnderRobot:
    """Keeps a model's finite floor planes drawn under the robot (see the module doc)."""

    def __init__(self, model: Any, root: int | None = None) -> None:
        self.root = robot_root(model) if root is None else root
        # geom id -> the in-plane shift that leaves its look unchanged: one period of its texture
        # (texrepeat copies over the plane's width, or per unit length with texuniform), or 0 for a
        # plain plane, which any shift leaves unchanged.
        self.periods: dict[int, np.ndarray] = {}
        for g in range(model.ngeom):
            if model.geom_type[g] != mujoco.mjtGeom.mjGEOM_PLANE or model.geom_bodyid[g] != 0:
                continue
            size = model.geom_size[g][:2]
            if not (size > 0).all():
                continue  # a plane of size 0 is drawn to the horizon already
            mat = model.geom_matid[g]
            if mat < 0 or model.mat_texid[mat].max() < 0:
                self.periods[g] = np.zeros(2)
            else:
                repeat = np.maximum(model.mat_texrepeat[mat], 1e-9)
                self.periods[g] = 1.0 / repeat if model.mat_texuniform[mat] else 2.0 * size / repeat

    def apply(self, scene: Any, data: Any) -> None:
        """Move the floors of an updated scene (``mjv_updateScene``) under the robot."""
        if not self.periods:
            return
        robot = data.subtree_com[self.root]
        for i in range(scene.ngeom):
            geom = scene.geoms[i]
            if geom.objtype != mujoco.mjtObj.mjOBJ_GEOM or geom.objid not in self.periods:
                continue
            period = self.periods[geom.objid]
            axes = geom.mat.reshape(3, 3)  # columns: the plane's x, y and normal in the world
            offset = axes[:, :2].T @ (robot - geom.pos)
            steps = np.where(period > 0, np.round(offset / np.where(period > 0, period, 1.0)) * period, offset)
            geom.pos[:] = geom.pos + axes[:, :2] @ steps

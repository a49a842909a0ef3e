"""Task definitions for mtm: scripted experts, reference scores, pixel observations.

- ``envs.tasks.TASKS``: the tasks mtm knows beyond the gymnasium registry (expert, dataset recipe).
- ``envs.experts``: scripted experts, batched numpy controllers that act from the observation.
- ``envs.references``: reference returns for normalised scores, with their provenance.
- ``envs.pixels``: the {"state", "pixels"} observation wrapper for MuJoCo tasks.
- ``envs.rendering``: MuJoCo's headless OpenGL backend, chosen before MuJoCo loads. Importing
  ``envs`` (or any of its modules) picks it, so every module here may import mujoco at its top.
- ``envs.mujoco_warnings``: MuJoCo's warnings as Python's, without the harmless one gymnasium's
  HalfCheetah model raises at every env made (and without a MUJOCO_LOG.TXT left in the cwd).
- ``envs.camera``: the camera videos are seen from (one that follows the robot) and the floor under it.
- ``envs.pixel_reacher``: mtm/ReacherPixels-v0, a task whose target only the image shows.
- ``envs.pixel_pusher``: mtm/PusherPixels-v0 (and a two-camera variant), an object to push that only
  the image shows.

This module imports nothing heavy (data readers import envs.references and should not pay for
gymnasium); ``register_envs`` imports gymnasium when it is called.
"""

from envs.rendering import headless_rendering_default

# MuJoCo fixes its OpenGL backend when it is first imported: the default must be in place before
# any module of envs (which runs this file first) or of mtm (through envs) imports mujoco.
headless_rendering_default()

__all__ = ["headless_rendering_default", "register_envs"]


def register_envs() -> None:
    """Register mtm's own env ids (``mtm/ReacherPixels-v0``, ``mtm/PusherPixels-v0``, ...) with
    gymnasium; safe to call repeatedly.

    Gymnasium 1.x no longer loads the ``gymnasium.envs`` entry point in pyproject.toml, so mtm calls
    this before it looks an id up (``mtm.rollout.check_env_id``), and so must scripts that use
    ``gym.make("mtm/...")`` directly.
    """
    from envs import pixel_pusher, pixel_reacher
    from envs.mujoco_warnings import route_mujoco_warnings

    route_mujoco_warnings()  # every env mtm makes is made after this call
    pixel_reacher.register()
    pixel_pusher.register()

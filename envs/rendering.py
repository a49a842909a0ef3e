"""Headless rendering: MuJoCo's OpenGL backend, chosen before MuJoCo loads (imports nothing heavy)."""

from __future__ import annotations

import os


def headless_rendering_default() -> None:
    """Pick MuJoCo's EGL backend when nothing is chosen and there is no display.

    MuJoCo reads MUJOCO_GL once, when it first loads; unset on a machine without a display it fails
    at the first render with an OpenGL error. A user's own choice (egl, osmesa, glfw) is kept.
    """
    if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl"

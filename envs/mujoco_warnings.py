"""MuJoCo's warnings, routed through Python's.

Without a handler, MuJoCo prints every warning to stderr *and* appends it to MUJOCO_LOG.TXT in the
current directory. gymnasium's HalfCheetah-v5 model file uses the compiler attribute
`settotalmass`, which MuJoCo 3.3+ deprecates: every HalfCheetah env made printed two lines (ten
times for `mtm eval --num-envs 10`) and left a MUJOCO_LOG.TXT wherever the command ran, about a file
the user cannot change. `route_mujoco_warnings` drops that one warning and turns every other into a
Python RuntimeWarning, which the user can see, filter or make an error like any other.
"""

from __future__ import annotations

import warnings

# Warnings about gymnasium's own model files: nothing a user of mtm can act on.
_KNOWN_HARMLESS = ("compiler attribute 'settotalmass' is deprecated",)


def _to_python_warning(message: str) -> None:
    if any(message.startswith(known) for known in _KNOWN_HARMLESS):
        return
    warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)


def route_mujoco_warnings() -> None:
    """Install the handler, once, unless the process has set a MuJoCo warning handler of its own
    (a user's is kept). Imports mujoco."""
    import mujoco

    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(_to_python_warning)

"""The `mtm` command line: a click group whose subcommands live one module per job in this package.

User mistakes raise `mtm.errors.MTMError`; this group prints them as one `error: ...` line and exits
with status 1 (click's own usage errors exit with 2). Ctrl-C exits with 130. Heavy imports (torch,
gymnasium) happen inside the commands, so `mtm --help` and `mtm inspect` stay fast.
"""

from __future__ import annotations

# Passive OpenMP waiting (mtm.hardware) must be chosen before torch loads.
from mtm.hardware import configure_threads  # (imports no torch)

configure_threads()
# Rendering (collect --pixels, eval --video, pixel tasks) without a display needs MUJOCO_GL chosen
# before MuJoCo loads: EGL unless the user picked a backend.
from envs import headless_rendering_default  # noqa: E402

headless_rendering_default()

from mtm.cli.group import main  # noqa: E402

# Each module adds its commands to `main` when imported (so they are imported, not used).
from mtm.cli import collect_command, data_commands, demo_command, eval_command, train_command  # noqa: E402

_COMMAND_MODULES = (collect_command, data_commands, demo_command, eval_command, train_command)
__all__ = ["main"]

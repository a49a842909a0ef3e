"""The `mtm` command line: a click group whose subcommands live one module per job in this package.

User mistakes raise `mtm.errors.MTMError`; this group prints them as one `error: ...` line and exits
with status 1 (click's own usage errors exit with 2). Ctrl-C exits with 130. Heavy imports (torch,
gymnasium) happen inside the commands, so `mtm --help` and `mtm inspect` stay fast.
"""

from __future__ import annotations

import os
import sys
import warnings

# With OpenMP's default busy-wait, two torch threads can run 10-100x slower when the other core is
# busy (an env, a loader). Passive waiting costs nothing measurable otherwise. Must precede torch.
from mtm.hardware import configure_threads  # noqa: E402  (imports no torch)

configure_threads()
# Rendering (collect --pixels, eval --video, pixel tasks) without a display needs MUJOCO_GL chosen
# before MuJoCo loads: EGL unless the user picked a backend.
from envs import headless_rendering_default  # noqa: E402

headless_rendering_default()

import click  # noqa: E402

from mtm import __version__  # noqa: E402
from mtm.errors import MTMError, MTMWarning  # noqa: E402


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, MTMWarning):
        click.echo(f"warning: {message}", err=True)  # one line, like errors
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


class _Group(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", MTMWarning)  # every notice, not once per code line
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except MTMError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="mtm")
def main() -> None:
    """Masked Trajectory Models: offline robot data in, policies out."""


# Each module adds its commands to `main` when imported.
from mtm.cli import collect_command, data_commands, demo_command, eval_command, train_command  # noqa: E402,F401

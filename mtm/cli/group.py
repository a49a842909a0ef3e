"""The `mtm` click group: one `error: ...` line and exit 1 for a user mistake (MTMError), one
`warning: ...` line for an MTMWarning, exit 130 on Ctrl-C and 143 on SIGTERM (mtm.interrupts). Commands register on `main` from their
own modules (mtm/cli/*_command.py), which import it from here.
"""

from __future__ import annotations

import sys
import warnings

import click

from mtm.version import __version__
from mtm.errors import ConfigError, MTMError, MTMWarning
from mtm.interrupts import describe, exit_code, signal_of, sigterm_as_interrupt


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, MTMWarning):
        click.echo(f"warning: {message}", err=True)  # one line, like errors
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


class _Group(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            # SIGTERM (a scheduler preempting the job, `kill`) stops as cleanly as Ctrl-C.
            with sigterm_as_interrupt(), warnings.catch_warnings():
                warnings.simplefilter("always", MTMWarning)  # every notice, not once per code line
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except MTMError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM as mtm.interrupts.Terminated
            click.echo(describe(signal_of(stop)), err=True)
            sys.exit(exit_code(signal_of(stop)))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="mtm")
def main() -> None:
    """Masked Trajectory Models: offline robot data in, policies out."""


def at_least(minimum: int):
    """A click callback: the option's value must be >= `minimum`. It runs while the command line is
    parsed, before anything is loaded, and the error names the option."""
    def check(ctx: click.Context, param: click.Parameter, value):
        if value is not None and value < minimum:
            raise ConfigError(f"{param.opts[0]} must be >= {minimum}, got {value}")
        return value

    return check

"""The `mtm` command line: a click group whose subcommands live one module per job in this package.

User mistakes raise `mtm.errors.MTMError`; this group prints them as one `error: ...` line and exits
with status 1 (click's own usage errors exit with 2). Ctrl-C exits with 130. Heavy imports (torch,
gymnasium) happen inside the commands, so `mtm --help` and `mtm inspect` stay fast.
"""

from __future__ import annotations

import sys

import click

from mtm import __version__
from mtm.errors import MTMError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
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
from mtm.cli import data_commands  # noqa: E402,F401

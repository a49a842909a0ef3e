"""User-facing errors.

Anything a user can cause (a wrong path, a malformed file, a bad option) raises a subclass of
`MTMError` with a message that says what is wrong and how to fix it. The CLI prints that one line
and exits non-zero; it never shows a traceback for these. Bugs in mtm itself are ordinary
exceptions and keep their traceback.
"""


class MTMError(Exception):
    """Base class: a problem the user can fix. The message is shown as is."""


class DataError(MTMError):
    """A dataset file is missing, unreadable, malformed or inconsistent."""


class ConfigError(MTMError):
    """A configuration value or command-line option is invalid."""


class OutputExistsError(MTMError):
    """An output path exists and --overwrite was not given."""


class OutputError(MTMError):
    """An output cannot be written: no space left, a read-only or missing folder, a busy run."""


class MTMWarning(UserWarning):
    """Something the user should know that does not stop the command (the CLI prints one
    `warning: ...` line; library callers get an ordinary Python warning)."""

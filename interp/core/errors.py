"""User-facing errors.

A `SublensError` is a mistake the user can fix (unknown model, bad layer, malformed file). The CLI
prints its message as one line and exits with code 2; anything else is a bug and keeps its
traceback.
"""


class SublensError(Exception):
    """A user error: the message says what is wrong and how to fix it, in one line."""


class BadFileError(SublensError, ValueError):
    """A file sublens reads (a run's JSON, a config) is damaged or foreign."""

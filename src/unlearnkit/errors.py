"""User-facing errors. The CLI prints their message as one line and exits non-zero."""


class UnlearnError(Exception):
    """A problem the user can fix (bad recipe, missing file, bad data). The message says how."""

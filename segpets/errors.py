"""Errors that mean "the input is wrong", as opposed to bugs.

The command-line entry points print a `SegpetsError` as one message and exit with
status 2; every other exception keeps its traceback.
"""


class SegpetsError(Exception):
    """Bad input from the user: the message says what, where, and how to fix it."""


class ConfigError(SegpetsError, ValueError):
    """A config option has a value segpets cannot use."""


class DataError(SegpetsError):
    """The dataset on disk is missing, incomplete or malformed."""

"""Errors in what the user gave: a config key, a file, a value, a run directory.

The command line prints their message in one line (naming the key, file or value) and exits
with status 2; any other exception is a bug and keeps its traceback. This module imports
nothing heavy, so ``distmeta --help`` and error paths stay fast.
"""


import reprlib

_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 120
_SHORT.maxlist = _SHORT.maxdict = _SHORT.maxtuple = _SHORT.maxset = 8
_SHORT.maxlevel = 3
MAX_MESSAGE = 2000
"""The longest an error message gets: a value shown in one is cut, never the whole of it."""


def short(value: object) -> str:
    """A bounded ``repr`` of ``value`` (a huge or deeply nested value is elided with ``...``)."""
    return _SHORT.repr(value)


def bounded(message: str, limit: int = MAX_MESSAGE) -> str:
    return message if len(message) <= limit else message[: limit - 25] + f" ... ({len(message)} characters)"


class DistmetaError(Exception):
    """Base of the errors a user can fix from the message alone."""


class ConfigError(DistmetaError, ValueError):
    """A config problem; the message names the key path or the file."""


class NotFound(DistmetaError, FileNotFoundError):
    """A file, directory, checkpoint or metric the user named (or the config points at) is not there."""


class RunExists(DistmetaError, FileExistsError):
    """A new run was asked for in a run directory that already holds one."""


class CheckpointError(DistmetaError, ValueError):
    """A checkpoint that cannot be read or does not fit; the message names the file."""


class DataError(DistmetaError, ValueError):
    """Input data that cannot be packed or read; the message names the file, class or value."""

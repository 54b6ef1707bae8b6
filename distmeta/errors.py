"""Errors in what the user gave: a config key, a file, a value, a run directory.

The command line prints their message in one line (naming the key, file or value) and exits
with status 2; any other exception is a bug and keeps its traceback. This module imports
nothing heavy, so ``distmeta --help`` and error paths stay fast.
"""


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

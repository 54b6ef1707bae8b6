"""Errors that the command line reports as one line naming the key, file or value.

This module imports nothing heavy, so ``distmeta --help`` and error paths stay fast.
"""


class ConfigError(ValueError):
    """A config problem; the message names the key path or the file."""

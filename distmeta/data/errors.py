"""Exceptions of the data room: every message names the bad file, key or value."""

from __future__ import annotations

from distmeta.errors import DataError


class ShardError(DataError):
    """A shard file is missing, truncated, corrupt, or holds an episode of the wrong shape.

    ``path`` is the shard (relative to the dataset directory), ``reason`` what is wrong.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"shard {path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        """Picklable with its two arguments, so it crosses process boundaries (Ray workers)."""
        return (type(self), (self.path, self.reason))


class ManifestError(DataError):
    """The manifest is missing, unreadable, inconsistent, or does not match the run config."""


class ShardUnavailable(DataError):
    """A shard file could not be read for a reason outside the file (an I/O error that
    persisted through the retries). Unlike a :class:`ShardError` it is never a reason to skip
    the file: that would make one worker's luck decide which episodes it draws."""

"""Locations: a local path or any URI that ``pyarrow.fs`` knows (s3://, gs://, hdfs://, file://).

Local paths are opened as paths (never turned into ``file://`` URIs), so names with ``#``,
``?`` or spaces mean what they say.
"""

from __future__ import annotations

import os

from pyarrow import fs as pafs


def is_uri(location: str) -> bool:
    """Whether ``location`` is a URI (``scheme://...``) rather than a local path."""
    return "://" in str(location)


def absolute(location: str) -> str:
    """A URI as given; a local path expanded (``~``) and made absolute."""
    return location if is_uri(location) else os.path.abspath(os.path.expanduser(location))


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path on it)`` for a local path or a URI; pyarrow's errors propagate."""
    if is_uri(location):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), absolute(location)

"""Locations: a local path or any URI that ``pyarrow.fs`` knows (s3://, gs://, hdfs://, file://).

Local paths are opened as paths (never turned into ``file://`` URIs), so names with ``#``,
``?`` or spaces mean what they say.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

from pyarrow import fs as pafs

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@\s:]*)(?::(?P<password>[^/@\s]*))?@")
_SECRET_QUERY = re.compile(r"(?i)(?P<key>[?&;](?:[\w-]*token|password|passwd|secret|api[_-]?key|access[_-]?key"
                           r"|signature|sig|credential|x-amz-[\w-]+)=)[^&;\s'\"]+")
_SECRET_WORD = re.compile(r"(?i)\b(?P<key>(?:[\w-]*token|password|secret|api[_-]?key)\s*[=:]\s*)[^\s,;'\"]{6,}")
REDACTED = "***"


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


def redact(text: str) -> str:
    """``text`` with the credentials it may hold replaced by ``***``: the password (and, for
    web URIs, the user) of ``scheme://user:password@host``, secrets in query strings
    (``?token=``, ``&X-Amz-Signature=`` ...), and ``token=...``/``password: ...`` words."""
    def userinfo(m: re.Match) -> str:
        if m["scheme"].lower().startswith("http"):
            return f"{m['scheme']}{REDACTED}@"
        return f"{m['scheme']}{m['user']}:{REDACTED}@" if m["password"] is not None else m[0]

    text = _USERINFO.sub(userinfo, text)
    text = _SECRET_QUERY.sub(lambda m: m["key"] + REDACTED, text)
    return _SECRET_WORD.sub(lambda m: m["key"] + REDACTED, text)


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """A web URI without its ``user:password@`` part, and the user and password it had."""
    parts = urlsplit(uri)
    if parts.scheme.lower() not in ("http", "https") or "@" not in parts.netloc:
        return uri, None, None
    host = parts.netloc.rsplit("@", 1)[1]
    stripped = urlunsplit(parts._replace(netloc=host))
    if parts.username == REDACTED:  # a URI as distmeta wrote it: the credentials come from the environment
        return stripped, None, None
    return stripped, parts.username, parts.password

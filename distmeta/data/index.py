"""Indexing one shard file: a single streaming pass that checks it against the manifest.

The file is read once, start to end, in large buffered reads (any ``pyarrow.fs``): every
byte goes through sha256; the tar headers are parsed as they pass (ustar: name, size,
type, header checksum; pax attribute headers, which webdataset writes for float mtimes, are
skipped); every record must hold exactly its members (an episode: four ``.npy`` arrays and
``meta.json``; a class: ``images.npy`` and ``meta.json``), its ``.npy`` headers must have
the manifest's shapes and dtypes, and its ``meta.json`` must name the manifest's family.
The result is the byte span of each record, so that reading is one ranged read each (for a
class, one ranged read per image).

Problems are reported in this order, so the message names the root cause: missing file,
size (truncated), sha256, tar structure, episode contents, episode count.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from distmeta.data.episode import MEMBERS, MemberCheck
from distmeta.data.errors import ShardError
from distmeta.data.manifest import ShardRow, join

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
_REGULAR = (b"0", b"\0")
_PAX = (b"x", b"g")


@dataclass(frozen=True)
class EpisodeSpan:
    """Where one record lies in its shard: bytes ``[start, end)``, members relative to start.

    A class record also keeps its ``meta``, its image ``count`` and ``pixels``, the offset of
    its first image's bytes in the file."""

    key: str
    start: int
    end: int
    members: dict[str, tuple[int, int]]
    meta: dict[str, Any] | None = None
    count: int = 0
    pixels: int = 0


class _HashingReader:
    """A read-only stream that hashes and counts what passes through it."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def read(self, n: int) -> bytes:
        data = self._raw.read(n)
        self.sha256.update(data)
        self.bytes += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def _octal(field: bytes, path: str, what: str, offset: int) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for large values
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text or b"0", 8)
    except ValueError as exc:
        raise ShardError(path, f"corrupt tar: bad {what} field {text!r} in the header at byte {offset}") from exc


def _header(block: bytes, path: str, offset: int) -> tuple[str, int, bytes] | None:
    """``(name, size, type)`` of a ustar header; ``None`` at the end-of-archive block."""
    if block == _ZERO_BLOCK:
        return None
    if len(block) < BLOCK:
        raise ShardError(path, f"corrupt tar: the file ends inside the header at byte {offset}")
    stored = _octal(block[148:156], path, "checksum", offset)
    if stored != sum(block) - sum(block[148:156]) + 8 * 32:
        raise ShardError(path, f"corrupt tar: bad header checksum at byte {offset}")
    name = block[:100].split(b"\0", 1)[0]
    prefix = block[345:500].split(b"\0", 1)[0] if block[257:262] == b"ustar" else b""
    full = (prefix + b"/" + name) if prefix else name
    return full.decode("utf-8", "surrogateescape"), _octal(block[124:136], path, "size", offset), block[156:157]


def _members(reader: _HashingReader, path: str, file_bytes: int) -> Iterator[tuple[str, int, int, bytes]]:
    """``(name, header offset, data offset, data)`` of each regular member, in file order; a
    header claiming more bytes than the file (``file_bytes``) holds is a corrupt tar."""
    offset = 0
    while True:
        block = reader.read(BLOCK)
        head = _header(block, path, offset) if block else None
        if head is None:
            return
        name, size, kind = head
        if size > file_bytes - offset - BLOCK:
            raise ShardError(path, f"corrupt tar: member {name[:100]!r} at byte {offset} claims {size} bytes, "
                                   f"more than the file's {file_bytes}")
        data = reader.read(size)
        pad = -size % BLOCK
        if len(data) < size or len(reader.read(pad)) < pad:
            raise ShardError(path, f"corrupt tar: the file ends inside member {name}")
        if kind in _REGULAR:
            yield name, offset, offset + BLOCK, data
        elif kind not in _PAX:
            raise ShardError(path, f"unexpected tar member type {kind!r} for {name}")
        offset += BLOCK + size + pad


class _Spans:
    """Collects members into record spans, checking each record's contents."""

    def __init__(self, row: ShardRow) -> None:
        from distmeta.data.classes import CLASS_MEMBERS, ClassCheck

        self.row = row
        self._classes = ClassCheck(row.shapes) if row.is_classes else None
        self._names = CLASS_MEMBERS if self._classes else MEMBERS
        self._check = None if self._classes else MemberCheck(row.shapes)
        self.spans: list[EpisodeSpan] = []
        self._key: str | None = None
        self._members: dict[str, tuple[int, int]] = {}
        self._meta: dict[str, Any] | None = None
        self._count = self._pixels = 0
        self._start = self._end = 0

    def _inspect(self, ext: str, data: bytes, name: str, data_offset: int) -> None:
        path = self.row.path
        if self._classes is not None:
            if ext == "meta.json":
                self._meta = self._classes.meta(data, path, name)
            else:
                self._count, header = self._classes.images(data, path, name)
                self._pixels = data_offset + header
        elif ext == "meta.json":
            _check_meta(data, path, name, self.row.family)
        else:
            self._check.check(data, path, name)  # type: ignore[union-attr]

    def add(self, name: str, offset: int, data_offset: int, data: bytes) -> None:
        path = self.row.path
        key, _, ext = name.rpartition("/")[2].partition(".")
        if ext not in self._names:
            raise ShardError(path, f"unexpected member {name}; a record holds {self._names}")
        if key != self._key:
            self.close()
            self._key, self._start = key, offset
        self._inspect(ext, data, name, data_offset)
        if ext in self._members:
            raise ShardError(path, f"record {key} has member {ext} twice (or is not contiguous)")
        self._members[ext] = (data_offset - self._start, len(data))
        self._end = data_offset + len(data)

    def close(self) -> None:
        if self._key is None:
            return
        missing = sorted(set(self._names) - set(self._members))
        if missing:
            raise ShardError(self.row.path, f"record {self._key} lacks member(s) {missing}")
        self.spans.append(EpisodeSpan(self._key, self._start, self._end, self._members,
                                      self._meta, self._count, self._pixels))
        self._key, self._members, self._meta = None, {}, None


def _check_meta(data: bytes, path: str, member: str, family: str) -> None:
    try:
        meta = json.loads(data)
    except ValueError as exc:
        raise ShardError(path, f"member {member} is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("family") != family:
        found = meta.get("family") if isinstance(meta, dict) else meta
        raise ShardError(path, f"member {member} is a {found!r} episode, the manifest says {family!r}")


def index_shard(fs: Any, base: str, row: ShardRow) -> tuple[EpisodeSpan, ...]:
    """Stream one shard file, check it against its manifest row, return its episode spans.

    Raises :class:`ShardError` naming the file: missing, truncated, sha256 mismatch, corrupt
    tar, bad or missing members, wrong episode count.
    """
    try:
        raw = fs.open_input_stream(join(base, row.path), buffer_size=1 << 20)
    except FileNotFoundError as exc:
        raise ShardError(row.path, "file is missing (the manifest lists it)") from exc
    reader, spans, problem = _HashingReader(raw), _Spans(row), None
    try:
        for member in _members(reader, row.path, row.bytes):
            spans.add(*member)
        spans.close()
    except ShardError as exc:
        problem = exc
    reader.drain()
    raw.close()
    if reader.bytes != row.bytes:
        kind = "truncated" if reader.bytes < row.bytes else "size mismatch"
        raise ShardError(row.path, f"{kind}: {reader.bytes} bytes, the manifest says {row.bytes}")
    if reader.sha256.hexdigest() != row.sha256:
        raise ShardError(row.path, f"sha256 mismatch: file {reader.sha256.hexdigest()}, "
                                   f"manifest {row.sha256} (corrupt or replaced)")
    if problem is not None:
        raise problem
    if len(spans.spans) != row.records:
        what = "classes" if row.is_classes else "episodes"
        raise ShardError(row.path, f"{len(spans.spans)} {what}, the manifest says {row.records}")
    return tuple(spans.spans)

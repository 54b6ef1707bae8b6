"""Checked, indexed random access to the shard files of one split.

The first time a shard file is used it is indexed (:func:`distmeta.data.index.index_shard`:
one streaming pass that checks size, sha256, tar structure and every episode's members, and
records each episode's byte span). The index is kept in memory, so later reads are one
ranged read per episode (``read_at``), on a local disk or any ``pyarrow.fs`` filesystem. A
file's verdict depends only on its bytes, never on the order in which episodes are asked for.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from distmeta.data.episode import ARRAYS, EpisodeRecord, MemberCheck
from distmeta.data.errors import ShardError, ShardUnavailable
from distmeta.data.index import EpisodeSpan, index_shard
from distmeta.data.manifest import Manifest, ShardRow, SplitInfo, join, open_dir

logger = logging.getLogger(__name__)
OnError = Literal["raise", "skip"]
ON_ERROR = ("raise", "skip")
RETRY_WAITS_S = (0.1, 0.5, 2.0)
"""The waits before each retry of a read that failed with an I/O error (a transient one)."""


def retrying(path: str, what: str, fn: Any, on_retry: Any = None) -> Any:
    """``fn()``, retried after each of :data:`RETRY_WAITS_S` while it raises an ``OSError``
    (not a missing file: that is the file's own state); then :class:`ShardUnavailable`."""
    for attempt, wait in enumerate((*RETRY_WAITS_S, None)):
        try:
            return fn()
        except FileNotFoundError:
            raise
        except OSError as exc:
            if wait is None:
                raise ShardUnavailable(f"shard {path}: {what} failed {attempt + 1} times ({exc}); the file is not "
                                       "skipped for it (whether a file is used must not depend on one read's luck)"
                                       ) from exc
            logger.warning("shard %s: %s failed (%s); retrying in %g s", path, what, exc, wait)
            if on_retry is not None:
                on_retry()
            time.sleep(wait)
    raise AssertionError("unreachable")


@dataclass
class ReadStats:
    """Counters for throughput: what was read and how long it took."""

    episodes: int = 0
    bytes: int = 0
    read_seconds: float = 0.0
    files_indexed: int = 0
    bytes_indexed: int = 0
    index_seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)


def _attempt(fs: Any, base: str, row: ShardRow) -> tuple[tuple[EpisodeSpan, ...] | ShardError, float]:
    """:func:`index_shard`'s spans or its error, and the seconds it took."""
    started = time.perf_counter()
    try:
        result: tuple[EpisodeSpan, ...] | ShardError = retrying(row.path, "checking", lambda: index_shard(fs, base, row))
    except ShardError as exc:
        result = exc
    return result, time.perf_counter() - started


class ShardStore:
    """The shard files of one split: checked on first use, then read by episode index."""

    def __init__(self, uri: str, split: str, on_error: OnError = "raise", max_open: int = 16,
                 index_workers: int = 2) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error={on_error!r}: expected one of {ON_ERROR}")
        self.uri, self.on_error, self._max_open = uri, on_error, max_open
        self.index_workers = index_workers
        self.manifest = Manifest.read(uri)
        self.info: SplitInfo = self.manifest.split(split)
        self.fs, self.base = open_dir(uri)
        self.stats = ReadStats()
        self._check = None if self.info.is_classes else MemberCheck(self.info.shapes)
        self._index: dict[str, tuple[EpisodeSpan, ...] | None] = {}
        self._handles: OrderedDict[str, Any] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (e.g. shipped to a Ray actor): open file handles are left behind."""
        state = self.__dict__.copy()
        state["_handles"] = OrderedDict()
        return state

    @property
    def rows(self) -> tuple[ShardRow, ...]:
        return self.info.rows

    @property
    def skipped(self) -> list[str]:
        """Shard files found bad and skipped (``on_error="skip"``), in the order found."""
        return self.stats.skipped

    def index(self, row: ShardRow) -> tuple[EpisodeSpan, ...] | None:
        """The episode spans of ``row``'s file (checked on first use); ``None`` if skipped."""
        if row.path not in self._index:
            self._settle(row, _attempt(self.fs, self.base, row))
        return self._index[row.path]

    def index_many(self, rows: Sequence[ShardRow]) -> None:
        """Index the files not yet indexed, ``index_workers`` at a time (threads: reading and
        hashing release the GIL); results are settled in ``rows`` order, as :meth:`index`."""
        todo = list({r.path: r for r in rows if r.path not in self._index}.values())
        if self.index_workers < 2 or len(todo) < 2:
            for row in todo:
                self.index(row)
            return
        with ThreadPoolExecutor(min(self.index_workers, len(todo))) as pool:
            attempts = list(pool.map(lambda r: _attempt(self.fs, self.base, r), todo))
        for row, attempt in zip(todo, attempts, strict=True):
            self._settle(row, attempt)

    def _settle(self, row: ShardRow, attempt: tuple[Any, float]) -> None:
        result, seconds = attempt
        self.stats.index_seconds += seconds
        if isinstance(result, ShardError):
            self.mark_bad(row, result)
            return
        self._index[row.path] = result
        self.stats.files_indexed += 1
        self.stats.bytes_indexed += row.bytes

    def mark_bad(self, row: ShardRow, error: ShardError) -> None:
        """Raise ``error`` (``on_error="raise"``) or record the file as skipped and log it."""
        if self.on_error == "raise":
            raise error
        self._index[row.path] = None
        self._close(row.path)
        if row.path not in self.stats.skipped:
            self.stats.skipped.append(row.path)
            logger.warning("skipping bad shard (%d skipped so far): %s", len(self.stats.skipped), error)

    def read(self, row: ShardRow, i: int) -> EpisodeRecord:
        """Episode ``i`` of ``row``'s file. :class:`ShardError` if the file is bad."""
        spans = self.index(row)
        if spans is None:
            raise ShardError(row.path, "skipped earlier as bad")
        span = spans[i]
        started = time.perf_counter()
        buf = memoryview(retrying(row.path, f"reading episode {span.key}",
                                  lambda: self._handle(row).read_at(span.end - span.start, span.start),
                                  lambda: self._close(row.path)))
        if len(buf) != span.end - span.start:
            raise ShardError(row.path, f"episode {span.key}: short read; file changed since it was checked")
        arrays = {}
        for name in ARRAYS:
            off, size = span.members[f"{name}.npy"]
            arrays[name] = self._check.decode(buf[off:off + size], row.path, f"{span.key}.{name}.npy")
        off, size = span.members["meta.json"]
        record = EpisodeRecord(**arrays, meta=json.loads(bytes(buf[off:off + size])))
        self.stats.episodes += 1
        self.stats.bytes += len(buf)
        self.stats.read_seconds += time.perf_counter() - started
        return record

    def read_images(self, row: ShardRow, i: int, picks: Sequence[int], image_shape: tuple[int, ...]) -> np.ndarray:
        """Images ``picks`` of class record ``i`` of ``row``'s file, uint8 ``[len(picks), *image_shape]``:
        one ranged read per image (or one read for a run of adjacent images)."""
        spans = self.index(row)
        if spans is None:
            raise ShardError(row.path, "skipped earlier as bad")
        span, size = spans[i], int(np.prod(image_shape))
        started = time.perf_counter()
        out = np.empty((len(picks), size), np.uint8)
        for j, pick in enumerate(picks):
            if not 0 <= pick < span.count:
                raise ValueError(f"image {pick} of class {span.key} in {row.path}: it has {span.count}")
            buf = retrying(row.path, f"reading class {span.key}",
                           lambda pick=pick: self._handle(row).read_at(size, span.pixels + pick * size),
                           lambda: self._close(row.path))
            if len(buf) != size:
                raise ShardError(row.path, f"class {span.key}: short read; file changed since it was checked")
            out[j] = np.frombuffer(buf, np.uint8)
        self.stats.bytes += out.nbytes
        self.stats.read_seconds += time.perf_counter() - started
        return out.reshape(len(picks), *image_shape)

    def _handle(self, row: ShardRow) -> Any:
        handle = self._handles.pop(row.path, None)
        if handle is None:
            handle = self.fs.open_input_file(join(self.base, row.path))
            while len(self._handles) >= self._max_open:
                self._close(next(iter(self._handles)))
        self._handles[row.path] = handle
        return handle

    def _close(self, path: str) -> None:
        handle = self._handles.pop(path, None)
        if handle is not None:
            handle.close()

    def close(self) -> None:
        """Close open file handles (reading reopens them)."""
        for path in list(self._handles):
            self._close(path)

"""Writing episodes into webdataset shards, one split at a time, streaming.

Shards of split ``train`` are ``train-000000.tar``, ``train-000001.tar`` ... (the brace set
``train-{000000..000127}.tar``); webdataset's ``ShardWriter`` starts a new one after
``maxcount`` episodes or ``maxsize`` bytes. Every file is hashed (sha256) as it is written, so
nothing is read back, and tar headers carry ``mtime=0``: the same seed gives byte-identical
shards. Any ``pyarrow.fs`` URI works as the output directory.

A repack never writes over what the current manifest names: it writes the next generation
(``train-g1-000000.tar`` ...), switches the manifest (an atomic rename), and only then
removes the old files; a pack that is killed leaves the previous data set as it was, and its
own partial files are removed by the next pack.
"""

from __future__ import annotations

import hashlib
import logging
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs
import webdataset as wds

from distmeta.data.episode import EpisodeRecord, encode_episode, store_inputs
from distmeta.data.manifest import (
    CLASS_FAMILY,
    Manifest,
    ManifestError,
    ShardRow,
    SourceIdentity,
    join,
    open_dir,
    write_manifest,
)

logger = logging.getLogger(__name__)


def split_stream(split: str) -> int:
    """A stable non-negative integer for a split name (CRC-32), used as the ``shard`` of
    ``episode_rng`` when packing, so each split draws from its own stream."""
    return zlib.crc32(split.encode("utf-8"))


@dataclass(frozen=True)
class ShardLayout:
    """How episodes are cut into shard files (webdataset ``ShardWriter`` limits) and stored.

    A new file starts after ``maxcount`` episodes or ``maxsize`` bytes. Small files keep the
    first batch fast (a file is checked whole on first use) and allow many logical shards
    (each needs at least one file). ``x_dtype="uint8"`` stores inputs as ``round(x * 255)``:
    lossless for 8-bit image sources such as Omniglot, 4x smaller than ``float32``.
    """

    maxcount: int = 100
    maxsize: float = 64e6
    x_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.maxcount < 1 or self.maxsize <= 0:
            raise ValueError(f"maxcount={self.maxcount}, maxsize={self.maxsize}: both must be > 0")


@dataclass(frozen=True)
class SplitSpec:
    """What the manifest records about every shard of one split."""

    split: str
    family: str
    params: dict[str, Any]
    loss: str
    seed: int
    source: SourceIdentity


class _HashingStream:
    """A write-only stream that hashes and counts what passes through it."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.bytes += len(data)
        self._raw.write(data)
        return len(data)

    def flush(self) -> None:
        self._raw.flush()

    def close(self) -> None:
        self._raw.close()


class _SplitWriter:
    """A ``wds.ShardWriter`` that records a :class:`ShardRow` for each file it closes.

    It writes records of any kind (episodes, classes): each comes with its member shapes,
    which must be the same for the whole split, and its image count (0 for episodes)."""

    def __init__(self, fs: pafs.FileSystem, base: str, spec: SplitSpec, layout: ShardLayout, prefix: str) -> None:
        self._fs, self._base, self._spec = fs, base, spec
        self._stream: _HashingStream | None = None
        self._count = self._first = self._index = self._images = 0
        self._shapes: dict[str, dict[str, Any]] | None = None
        self.rows: list[ShardRow] = []
        self._writer = wds.ShardWriter(f"{prefix}%06d.tar", maxcount=layout.maxcount,
                                       maxsize=layout.maxsize, post=self._finish, verbose=0,
                                       opener=self._open, encoder=False, mtime=0)

    def _open(self, name: str) -> _HashingStream:
        self._stream = _HashingStream(self._fs.open_output_stream(join(self._base, name)))
        return self._stream

    def _finish(self, name: str) -> None:
        stream = self._stream
        if stream is None or self._shapes is None:
            raise ManifestError(f"{name}: closed before any record was written")
        stream.close()
        spec = self._spec
        is_classes = spec.family == CLASS_FAMILY
        self.rows.append(ShardRow(
            name, spec.split, self._index, 0 if is_classes else self._count, self._first, stream.bytes,
            stream.sha256.hexdigest(), spec.family, spec.params, spec.loss, self._shapes,
            spec.seed, spec.source, self._count if is_classes else 0, self._images))
        logger.info("wrote %s: %d %s, %d bytes", name, self._count,
                    "classes" if is_classes else "episodes", stream.bytes)
        self._first += self._count
        self._count = self._images = 0
        self._index += 1

    def write(self, sample: dict[str, Any], shapes: dict[str, dict[str, Any]], images: int = 0) -> None:
        if self._shapes is None:
            self._shapes = shapes
        elif shapes != self._shapes:
            raise ValueError(f"split {self._spec.split!r} record {sample['__key__']}: shapes {shapes} "
                             f"differ from the split's {self._shapes}")
        self._writer.write(sample)
        self._count += 1
        self._images += images

    def close(self) -> list[ShardRow]:
        if self._shapes is None:
            raise ValueError(f"split {self._spec.split!r}: nothing to write")
        self._writer.close()
        return self.rows


@contextmanager
def progress_bar(description: str, total: int | None, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar (or nothing): yields ``advance(n)``."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def write_records(out_dir: str, spec: SplitSpec,
                  samples: Iterable[tuple[dict[str, Any], dict[str, dict[str, Any]], int]], *,
                  total: int | None = None, layout: ShardLayout | None = None,
                  progress: bool = False, what: str | None = None) -> list[ShardRow]:
    """Write ``(webdataset sample, member shapes, images)`` records as the shards of
    ``spec.split`` under ``out_dir``; return their rows. Streams: one record at a time.
    The manifest is not touched (see :func:`publish`)."""
    layout = layout or ShardLayout()
    fs, base = open_dir(out_dir)
    fs.create_dir(base, recursive=True)
    writer = _SplitWriter(fs, base, spec, layout, file_prefix(out_dir, spec.split))
    with progress_bar(what or f"packing {spec.split}", total, progress) as advance:
        for sample, shapes, images in samples:
            writer.write(sample, shapes, images)
            advance(1)
    return writer.close()


def write_split(out_dir: str, spec: SplitSpec, episodes: Iterable[EpisodeRecord], *,
                total: int | None = None, layout: ShardLayout | None = None,
                progress: bool = False) -> list[ShardRow]:
    """Write ``episodes`` as the episode shards of ``spec.split`` under ``out_dir``."""
    layout = layout or ShardLayout()

    def samples() -> Iterator[tuple[dict[str, Any], dict[str, dict[str, Any]], int]]:
        for index, record in enumerate(episodes):
            stored = store_inputs(record, layout.x_dtype)
            yield encode_episode(stored, f"{index:08d}"), stored.shapes(), 0

    return write_records(out_dir, spec, samples(), total=total, layout=layout, progress=progress)


GENERATION = re.compile(r"^(?P<split>.+?)-(?:g(?P<gen>\d+)-)?\d{6}\.tar$")


def _current_paths(out_dir: str) -> list[str]:
    try:
        return [r.path for r in Manifest.read(out_dir).rows]
    except ManifestError:
        return []


def file_prefix(out_dir: str, split: str) -> str:
    """The names a new pack of ``split`` writes: ``split-`` for the first, then the next
    generation (``split-g1-``, ``split-g2-`` ...) after those the manifest names."""
    used = [int(m["gen"] or 0) for p in _current_paths(out_dir) if (m := GENERATION.match(p)) and m["split"] == split]
    return f"{split}-" if not used else f"{split}-g{max(used) + 1}-"


def publish(out_dir: str, rows: list[ShardRow]) -> Manifest:
    """Switch the manifest to ``rows`` (an atomic rename), then delete the shard files of the
    same splits that it no longer names: the old generation, and partial files a killed pack
    left behind."""
    fs, base = open_dir(out_dir)
    manifest = write_manifest(out_dir, rows)
    current, splits = {r.path for r in manifest.rows}, {r.split for r in rows}
    on_disk = fs.get_file_info(pafs.FileSelector(base, recursive=False))
    for info in sorted(on_disk, key=lambda i: i.base_name):
        m = GENERATION.match(info.base_name)
        if info.type == pafs.FileType.File and m and m["split"] in splits and info.base_name not in current:
            logger.info("removing stale shard %s", info.base_name)
            fs.delete_file(join(base, info.base_name))
    return manifest

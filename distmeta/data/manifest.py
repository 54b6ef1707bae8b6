"""``manifest.parquet``: one row per shard file, the entry point to a dataset directory.

A dataset directory is a local path or any ``pyarrow.fs`` URI (``s3://``, ``gs://``,
``hdfs://``, ``file://``). Its ``manifest.parquet`` lists every shard with its path (relative
to the directory), split, episode count, size, sha256, the task family and its parameters
(a JSON string), the record shapes, the packing seed, and the identity of the source data
set (name, sha256, details). Image data sets are packed as class shards (family ``images``:
one record per class, see :mod:`distmeta.data.classes`); their rows also count the classes
and images in each file. Readers open a directory only through its manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from distmeta.data.errors import ManifestError
from distmeta.errors import short
from distmeta.uri import absolute, filesystem

MAX_COUNT = 2**40
"""The largest count (bytes, episodes, images) a manifest row may give."""
MIN_RECORD_BYTES = 1024
"""The least a record (tar headers and data blocks of its members) takes in a shard file."""

FORMAT_VERSION = 2
CLASS_FAMILY = "images"
"""The manifest family of class shards (one record per class), whatever the source."""
MANIFEST_NAME = "manifest.parquet"
SCHEMA = pa.schema([
    ("path", pa.string()), ("split", pa.string()), ("shard_index", pa.int32()),
    ("episodes", pa.int64()), ("first_episode", pa.int64()), ("bytes", pa.int64()),
    ("sha256", pa.string()), ("family", pa.string()), ("family_params", pa.string()),
    ("loss", pa.string()), ("shapes", pa.string()), ("seed", pa.int64()),
    ("source_name", pa.string()), ("source_sha256", pa.string()), ("source_detail", pa.string()),
    ("format_version", pa.int32()), ("classes", pa.int64()), ("images", pa.int64()),
], metadata={"distmeta.format_version": str(FORMAT_VERSION)})


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces: equal objects give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def open_dir(uri: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, base path)`` for a local path or any ``pyarrow.fs`` URI."""
    try:
        return filesystem(str(uri))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise ManifestError(f"dataset path {uri!r}: cannot open its filesystem ({exc})") from exc


def join(base: str, rel: str) -> str:
    """``base/rel`` with exactly one slash (pyarrow paths always use ``/``)."""
    return f"{base.rstrip('/')}/{rel}"


@dataclass(frozen=True)
class SourceIdentity:
    """Which source data set the episodes were drawn from: a name, a sha256, free details."""

    name: str
    sha256: str
    detail: dict[str, Any] = field(default_factory=dict)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a local file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ShardRow:
    """One manifest row: one shard file."""

    path: str
    split: str
    shard_index: int
    episodes: int
    first_episode: int
    bytes: int
    sha256: str
    family: str
    family_params: dict[str, Any]
    loss: str
    shapes: dict[str, dict[str, Any]]
    seed: int
    source: SourceIdentity
    classes: int = 0
    images: int = 0

    @property
    def is_classes(self) -> bool:
        """A class shard (one record per class), not a file of episodes."""
        return self.family == CLASS_FAMILY

    @property
    def records(self) -> int:
        """Records in the file: classes for class shards, episodes otherwise."""
        return self.classes if self.is_classes else self.episodes

    def to_record(self) -> dict[str, Any]:
        return {
            "path": self.path, "split": self.split, "shard_index": self.shard_index,
            "episodes": self.episodes, "first_episode": self.first_episode, "bytes": self.bytes,
            "sha256": self.sha256, "family": self.family,
            "family_params": canonical_json(self.family_params), "loss": self.loss,
            "shapes": canonical_json(self.shapes), "seed": self.seed,
            "source_name": self.source.name, "source_sha256": self.source.sha256,
            "source_detail": canonical_json(self.source.detail), "format_version": FORMAT_VERSION,
            "classes": self.classes, "images": self.images,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any], where: str) -> ShardRow:
        try:
            source = SourceIdentity(rec["source_name"], rec["source_sha256"],
                                    json.loads(rec["source_detail"]))
            row = cls(rec["path"], rec["split"], int(rec["shard_index"]), int(rec["episodes"]),
                      int(rec["first_episode"]), int(rec["bytes"]), rec["sha256"], rec["family"],
                      json.loads(rec["family_params"]), rec["loss"], json.loads(rec["shapes"]),
                      int(rec["seed"]), source, int(rec.get("classes") or 0),
                      int(rec.get("images") or 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{where}: malformed row for shard {short(rec.get('path'))} ({short(exc)})") from exc
        row.check(where)
        return row

    def check(self, where: str) -> None:
        """A path inside the data directory, and counts a file can hold."""
        path = self.path
        if (not isinstance(path, str) or not path or path.startswith(("/", "\\")) or "\\" in path or "://" in path
                or any(part in ("", ".", "..") for part in path.split("/"))):
            raise ManifestError(f"{where}: shard path {short(path)} is not a plain relative path inside the data "
                                "directory")
        counts = {"episodes": self.episodes, "bytes": self.bytes, "classes": self.classes, "images": self.images,
                  "first_episode": self.first_episode, "shard_index": self.shard_index}
        bad = {k: v for k, v in counts.items() if not 0 <= v <= MAX_COUNT}
        if bad:
            raise ManifestError(f"{where}: shard {path}: counts out of range {bad} (0..{MAX_COUNT})")
        if self.records * MIN_RECORD_BYTES > self.bytes or self.images > self.bytes:
            raise ManifestError(f"{where}: shard {path}: {self.records} records and {self.images} images cannot fit "
                                f"in its {self.bytes} bytes")


@dataclass(frozen=True)
class SplitInfo:
    """The rows of one split, which must all share family, parameters, shapes and source."""

    name: str
    rows: tuple[ShardRow, ...]

    @property
    def family(self) -> str:
        return self.rows[0].family

    @property
    def params(self) -> dict[str, Any]:
        return self.rows[0].family_params

    @property
    def loss(self) -> str:
        return self.rows[0].loss

    @property
    def shapes(self) -> dict[str, dict[str, Any]]:
        return self.rows[0].shapes

    @property
    def episodes(self) -> int:
        return sum(r.episodes for r in self.rows)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.rows)

    @property
    def classes(self) -> int:
        return sum(r.classes for r in self.rows)

    @property
    def images(self) -> int:
        return sum(r.images for r in self.rows)

    @property
    def is_classes(self) -> bool:
        """Class shards (fresh episodes sampled at every step), not a fixed episode pool."""
        return self.rows[0].is_classes

    def check_compatible(self, **expected: Any) -> None:
        """Raise :class:`ManifestError` unless every given value matches the packed data.

        ``family=`` compares the family name; any other keyword (``way``, ``shot``, ``query``,
        ``shots`` ...) a family parameter. ``None`` values are not checked.
        """
        for key, want in expected.items():
            if want is None:
                continue
            if key == "family":
                have: Any = self.family
            elif key in self.params:
                have = self.params[key]
            else:
                raise ManifestError(
                    f"split {self.name!r} ({self.family}) has no parameter {key!r} to compare with "
                    f"{key}={want!r}; it has {sorted(self.params)}")
            if json.loads(canonical_json(have)) != json.loads(canonical_json(want)):
                raise ManifestError(
                    f"split {self.name!r}: the shards hold {key}={have!r} but the config expects "
                    f"{key}={want!r}; repack the data or fix the config")


class Manifest:
    """A dataset directory's manifest: shard rows grouped by split."""

    def __init__(self, uri: str, rows: Iterable[ShardRow]) -> None:
        self.uri = uri
        self.rows = tuple(sorted(rows, key=lambda r: (r.split, r.shard_index)))

    @classmethod
    def read(cls, uri: str) -> Manifest:
        """Read ``<uri>/manifest.parquet``; :class:`ManifestError` if missing or malformed."""
        fs, base = open_dir(uri)
        path = join(base, MANIFEST_NAME)
        try:
            with fs.open_input_file(path) as f:
                table = pq.ParquetFile(f).read()
        except FileNotFoundError as exc:
            raise ManifestError(f"{path}: no manifest here; is {uri!r} a packed dataset?") from exc
        except (OSError, pa.ArrowException) as exc:
            raise ManifestError(f"{path}: unreadable manifest ({exc})") from exc
        missing = set(SCHEMA.names) - set(table.column_names) - {"classes", "images"}  # v1: episodes only
        if missing:
            raise ManifestError(f"{path}: manifest lacks column(s) {sorted(missing)}")
        return cls(uri, (ShardRow.from_record(r, path) for r in table.to_pylist()))

    @property
    def digest(self) -> str:
        """A digest of the dataset: sha256 over every shard file's path and sha256, in order."""
        h = hashlib.sha256()
        for row in self.rows:
            h.update(f"{row.path}\0{row.sha256}\n".encode())
        return h.hexdigest()

    @property
    def splits(self) -> list[str]:
        return sorted({r.split for r in self.rows})

    def urls(self, split: str) -> list[str]:
        """Full paths / URIs of a split's shard files, in order, for any tar reader, e.g.
        ``webdataset.WebDataset(manifest.urls("train"), shardshuffle=False)``."""
        root = absolute(self.uri)
        return [join(root, r.path) for r in self.split(split).rows]

    def split(self, name: str) -> SplitInfo:
        """The rows of split ``name``, checked for consistency."""
        rows = tuple(r for r in self.rows if r.split == name)
        if not rows:
            raise ManifestError(f"{self.uri}: no split {name!r} in the manifest; it has {self.splits}")
        first = rows[0]
        for r in rows[1:]:
            for attr in ("family", "family_params", "loss", "shapes", "source"):
                if getattr(r, attr) != getattr(first, attr):
                    raise ManifestError(
                        f"{self.uri}: split {name!r} mixes {attr} values: {first.path} has "
                        f"{getattr(first, attr)!r}, {r.path} has {getattr(r, attr)!r}")
        return SplitInfo(name, rows)


def write_manifest(uri: str, rows: Iterable[ShardRow]) -> Manifest:
    """Merge ``rows`` into ``<uri>/manifest.parquet``, replacing the rows of their splits.

    Written to a temporary file, then renamed, so readers never see a half-written manifest.
    """
    new = list(rows)
    fs, base = open_dir(uri)
    path = join(base, MANIFEST_NAME)
    try:
        kept = [r for r in Manifest.read(uri).rows if r.split not in {n.split for n in new}]
    except ManifestError:
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            raise
        kept = []
    manifest = Manifest(uri, kept + new)
    table = pa.Table.from_pylist([r.to_record() for r in manifest.rows], schema=SCHEMA)
    tmp = join(base, f".{MANIFEST_NAME}.tmp")
    with fs.open_output_stream(tmp) as f:
        pq.write_table(table, f)
    fs.move(tmp, path)
    return manifest

"""Episode shards on disk: pack, describe (manifest), check, and read.

A dataset directory (local path or any ``pyarrow.fs`` URI) holds webdataset tar shards
``<split>-000000.tar`` ..., each sample one episode (``support_x.npy``, ``support_y.npy``,
``query_x.npy``, ``query_y.npy``, ``meta.json``; no pickle), and a ``manifest.parquet`` with
one row per shard (path, split, episodes, bytes, sha256, family and parameters, source
identity). This package is the only one that imports webdataset.

Packing: :func:`pack_omniglot`, :func:`pack_image_folder`, :func:`pack_procedural`.
Reading: :class:`ShardEpisodeSource` (a task family keyed by (seed, step, shard), over
explicitly assigned logical shards) and :class:`EpisodeReader` / :func:`iter_episodes`
(evaluation: every episode once). Bad files raise :class:`ShardError` or are skipped.
"""

from distmeta.data.episode import EpisodeRecord
from distmeta.data.errors import ManifestError, ShardError
from distmeta.data.image_folder import pack_image_folder
from distmeta.data.manifest import MANIFEST_NAME, Manifest, ShardRow, SourceIdentity, SplitInfo
from distmeta.data.omniglot import (
    OmniglotSplits,
    omniglot_classes,
    pack_omniglot,
    split_characters,
)
from distmeta.data.procedural import pack_procedural
from distmeta.data.reader import EpisodeReader, ShardEpisodeSource, iter_episodes
from distmeta.data.store import ReadStats, ShardStore
from distmeta.data.writer import ShardLayout, SplitSpec, publish, write_split

__all__ = [
    "MANIFEST_NAME",
    "EpisodeReader",
    "EpisodeRecord",
    "Manifest",
    "ManifestError",
    "OmniglotSplits",
    "ReadStats",
    "ShardEpisodeSource",
    "ShardError",
    "ShardLayout",
    "ShardRow",
    "ShardStore",
    "SourceIdentity",
    "SplitInfo",
    "SplitSpec",
    "iter_episodes",
    "omniglot_classes",
    "pack_image_folder",
    "pack_omniglot",
    "pack_procedural",
    "publish",
    "split_characters",
    "write_split",
]

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

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "EpisodeRecord": "episode", "ManifestError": "errors", "ShardError": "errors",
    "pack_image_folder": "image_folder", "MANIFEST_NAME": "manifest", "Manifest": "manifest",
    "ShardRow": "manifest", "SourceIdentity": "manifest", "SplitInfo": "manifest",
    "OmniglotSplits": "omniglot", "omniglot_classes": "omniglot", "pack_omniglot": "omniglot",
    "split_characters": "omniglot", "pack_procedural": "procedural", "EpisodeReader": "reader",
    "ShardEpisodeSource": "reader", "iter_episodes": "reader", "ReadStats": "store",
    "ShardStore": "store", "ShardLayout": "writer", "SplitSpec": "writer", "publish": "writer",
    "write_split": "writer",
}


def __getattr__(name: str) -> Any:
    """Names are imported on first use, so ``distmeta.data.cli``'s parser costs no torch."""
    if name not in _HOMES:
        raise AttributeError(f"module 'distmeta.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"distmeta.data.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


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

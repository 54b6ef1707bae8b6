"""Shards on disk: pack, describe (manifest), check, and read.

A dataset directory (local path or any ``pyarrow.fs`` URI) holds webdataset tar shards
``<split>-000000.tar`` ... and a ``manifest.parquet`` with one row per shard (path, split,
records, classes, images, bytes, sha256, family and parameters, source identity). Image data
sets are class shards: each sample one class (``images.npy`` uint8 ``[n, C, H, W]``,
``meta.json``), and episodes are sampled from them at every step (:class:`ClassShards`).
Procedural families may be packed as fixed pools of episodes (``support_x.npy``,
``support_y.npy``, ``query_x.npy``, ``query_y.npy``, ``meta.json``). Both are read through
one checked index (:mod:`distmeta.data.index`, :mod:`distmeta.data.store`); no pickle. This
package is the only one that imports webdataset.

Packing class shards: :func:`pack_omniglot`, :func:`pack_mini_imagenet`,
:func:`pack_tiered_imagenet`, :func:`pack_cifar_fs`, :func:`pack_fc100`,
:func:`pack_image_folder`; episode pools: :func:`pack_procedural`.
Reading: :class:`ShardEpisodeSource` (a task family keyed by (seed, step, shard), over
explicitly assigned logical shards) and :class:`EpisodeReader` / :func:`iter_episodes`
(evaluation: every episode once). Bad files raise :class:`ShardError` or are skipped.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "ClassShards": "class_shards", "ClassRecord": "classes", "pack_splits": "classes",
    "write_classes": "classes", "pack_tiered_imagenet": "image_folder",
    "pack_mini_imagenet": "imagenet", "pack_cifar_fs": "cifar", "pack_fc100": "cifar",
    "EpisodeRecord": "episode", "ManifestError": "errors", "ShardError": "errors",
    "pack_image_folder": "image_folder", "MANIFEST_NAME": "manifest", "Manifest": "manifest",
    "ShardRow": "manifest", "SourceIdentity": "manifest", "SplitInfo": "manifest",
    "OmniglotSplits": "omniglot", "omniglot_root": "omniglot", "OMNIGLOT_ENV": "omniglot", "omniglot_classes": "omniglot", "pack_omniglot": "omniglot",
    "split_characters": "omniglot", "pack_procedural": "procedural", "EpisodeReader": "reader",
    "ShardEpisodeSource": "reader", "iter_episodes": "reader", "ReadStats": "store",
    "ShardStore": "store", "ShardLayout": "writer", "SplitSpec": "writer", "publish": "writer",
    "write_split": "writer", "pack_meta_dataset": "meta_dataset", "read_spec": "md_spec",
}


def __getattr__(name: str) -> Any:
    """Names are imported on first use, so ``distmeta.data.cli``'s parser costs no torch."""
    if name not in _HOMES:
        raise AttributeError(f"module 'distmeta.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"distmeta.data.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ClassRecord",
    "ClassShards",
    "pack_meta_dataset",
    "read_spec",
    "pack_splits",
    "write_classes",
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
    "omniglot_root",
    "OMNIGLOT_ENV",
    "pack_cifar_fs",
    "pack_fc100",
    "pack_image_folder",
    "pack_mini_imagenet",
    "pack_tiered_imagenet",
    "pack_omniglot",
    "pack_procedural",
    "publish",
    "split_characters",
    "write_split",
]

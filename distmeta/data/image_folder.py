"""Packing N-way K-shot episodes from an image folder (one sub-folder per class).

The folder is listed with ``torchvision.datasets.ImageFolder`` (its class and file order:
sorted). Images are decoded with PIL only when an episode needs them (a small LRU cache
keeps recent ones), converted to RGB (``channels=3``) or grey (``channels=1``), resized to
``image_size`` with bilinear filtering, and stored as ``[C, H, W]`` float32 in [0, 1]. One
call packs one split: all classes of the folder (or the ``classes`` given) belong to it, as
with the per-split folders of miniImageNet and tieredImageNet. Episode ``i`` is drawn by the
generator ``episode_rng(seed, i // chunk_size, split_stream(split))``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from distmeta.data.episode import EpisodeRecord
from distmeta.data.manifest import Manifest, SourceIdentity, file_sha256
from distmeta.data.writer import ShardLayout, SplitSpec, publish, split_stream, write_split
from distmeta.tasks import episode_rng

logger = logging.getLogger(__name__)


class _FolderPool:
    """Class -> image paths, with lazy, cached decoding to ``[C, H, W]`` float32."""

    def __init__(self, root: Path, size: tuple[int, int], channels: int, min_examples: int,
                 classes: Sequence[str] | None, cache_size: int) -> None:
        from torchvision.datasets import ImageFolder

        folder = ImageFolder(str(root), allow_empty=True)
        wanted = list(folder.classes if classes is None else classes)
        unknown = sorted(set(wanted) - set(folder.classes))
        if unknown:
            raise ValueError(f"classes {unknown}: not sub-folders of {root} (it has {len(folder.classes)})")
        by_class: dict[str, list[str]] = {name: [] for name in wanted}
        for path, target in folder.samples:
            name = folder.classes[target]
            if name in by_class:
                by_class[name].append(path)
        small = {n: len(p) for n, p in by_class.items() if len(p) < min_examples}
        if small:
            logger.warning("%s: %d class(es) have fewer than shot + query = %d images and are left out: %s",
                           root, len(small), min_examples, dict(list(small.items())[:10]))
        self.root = root
        self.names = [n for n in wanted if n not in small]
        self.paths = [sorted(by_class[n]) for n in self.names]
        self.size, self.channels = size, channels
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    def image(self, path: str) -> np.ndarray:
        cached = self._cache.pop(path, None)
        if cached is None:
            with Image.open(path) as img:
                img = img.convert("RGB" if self.channels == 3 else "L")
                img = img.resize((self.size[1], self.size[0]), Image.BILINEAR)
                array = np.asarray(img, dtype=np.float32) / np.float32(255.0)
            cached = array.reshape(self.size[0], self.size[1], -1).transpose(2, 0, 1).copy()
            while len(self._cache) >= self._cache_size > 0:
                self._cache.popitem(last=False)
        if self._cache_size > 0:
            self._cache[path] = cached
        return cached

    def identity(self) -> SourceIdentity:
        """sha256 over ``relative path:sha256`` of every image used, in order."""
        digest = hashlib.sha256()
        for paths in self.paths:
            for path in paths:
                digest.update(f"{os.path.relpath(path, self.root)}:{file_sha256(path)}\n".encode())
        return SourceIdentity(self.root.name, digest.hexdigest(),
                              {"root": str(self.root), "classes": len(self.names),
                               "images": sum(len(p) for p in self.paths)})


def _episode(pool: _FolderPool, rng: np.random.Generator, way: int, shot: int,
             query: int) -> tuple[EpisodeRecord, list[str]]:
    classes = rng.choice(len(pool.names), way, replace=False)
    support, queries = [], []
    for c in classes:
        picks = rng.choice(len(pool.paths[c]), shot + query, replace=False)
        images = [pool.image(pool.paths[c][int(i)]) for i in picks]
        support.append(images[:shot])
        queries.append(images[shot:])
    labels = np.arange(way, dtype=np.int64)
    record = EpisodeRecord(np.stack(sum(support, [])), np.repeat(labels, shot),
                           np.stack(sum(queries, [])), np.repeat(labels, query))
    return record, [pool.names[int(c)] for c in classes]


def _records(pool: _FolderPool, split: str, n_episodes: int, seed: int, way: int, shot: int,
             query: int, chunk_size: int) -> Iterator[EpisodeRecord]:
    for chunk, start in enumerate(range(0, n_episodes, chunk_size)):
        rng = episode_rng(seed, chunk, split_stream(split))
        for index in range(start, min(start + chunk_size, n_episodes)):
            record, names = _episode(pool, rng, way, shot, query)
            meta = {"family": "image_folder", "split": split, "index": index, "seed": seed,
                    "way": way, "shot": shot, "query": query, "source_classes": names}
            yield EpisodeRecord(record.support_x, record.support_y, record.query_x,
                                record.query_y, meta)


def pack_image_folder(root: str | Path, out_dir: str, split: str, n_episodes: int, way: int = 5,
                      shot: int = 1, query: int = 15, image_size: int | tuple[int, int] = 84,
                      seed: int = 0, *, channels: int = 3, classes: Sequence[str] | None = None,
                      layout: ShardLayout | None = None, chunk_size: int = 64,
                      cache_size: int = 4096, progress: bool = False) -> Manifest:
    """Pack ``n_episodes`` N-way K-shot episodes of ``split`` from the image folder ``root``.

    ``query`` is per class; labels 0..way-1 follow the random class order. Classes with fewer
    than ``shot + query`` images are left out (logged).
    """
    root = Path(root)
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if channels not in (1, 3) or min(size) < 1 or len(size) != 2:
        raise ValueError(f"channels={channels}, image_size={image_size}: need channels 1 or 3 and a positive size")
    if way < 2 or shot < 1 or query < 1 or n_episodes < 1 or chunk_size < 1:
        raise ValueError(f"way={way}, shot={shot}, query={query}, n_episodes={n_episodes}, "
                         f"chunk_size={chunk_size}: need way >= 2 and the others >= 1")
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root}: not a directory")
    pool = _FolderPool(root, size, channels, shot + query, classes, cache_size)
    if len(pool.names) < way:
        raise ValueError(f"{root}: {len(pool.names)} usable classes, fewer than way={way}")
    layout = layout or ShardLayout()
    params = {"way": way, "shot": shot, "query": query, "image_size": list(size),
              "channels": channels, "n_classes": len(pool.names), "x_dtype": layout.x_dtype}
    spec = SplitSpec(split, "image_folder", params, "cross_entropy", seed, pool.identity())
    records = _records(pool, split, n_episodes, seed, way, shot, query, chunk_size)
    rows = write_split(out_dir, spec, records, total=n_episodes, layout=layout, progress=progress)
    return publish(out_dir, rows)

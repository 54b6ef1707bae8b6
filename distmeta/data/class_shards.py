"""A split's class shards as a pool of classes, read image by image with a bounded cache.

Construction reads only the manifest. The first use indexes every file of the split (each
is checked whole: size, sha256, tar structure, every class record; see
:mod:`distmeta.data.index`), ``index_workers`` files at a time, because every task may draw
from any class. Images are then read one ranged read each and kept in an LRU cache of at
most ``cache_mb`` MiB per reader (per worker), so a split larger than memory (tiered-ImageNet
at 84 px, about 9.5 GB) is read as it is needed.

Bad files: ``on_error="raise"`` raises :class:`ShardError` naming the file; ``"skip"`` leaves
the file's classes out of the pool, logs it and counts it in ``skipped`` (a file's verdict
depends only on its bytes, so every worker leaves out the same classes).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from distmeta.data.errors import ManifestError, ShardError
from distmeta.data.manifest import ShardRow
from distmeta.data.reader import OverStore
from distmeta.data.store import OnError, ShardStore


class ClassShards(OverStore):
    """The classes of one split of a class-shard data set (a :class:`ClassPool`)."""

    def __init__(self, path: str, split: str = "train", on_error: OnError = "raise",
                 cache_mb: float = 512.0, index_workers: int = 2) -> None:
        if cache_mb < 0:
            raise ValueError(f"data.cache_mb={cache_mb}: must be >= 0")
        self.path, self.split, self.cache_mb = path, split, cache_mb
        self._store = ShardStore(path, split, on_error, index_workers=index_workers)
        if not self._store.info.is_classes:
            raise ManifestError(
                f"{path}: split {split!r} holds {self._store.info.family!r} episodes, not class shards; "
                "image data sets are packed as classes (distmeta data pack)")
        self.image_shape: tuple[int, ...] = tuple(self._store.info.shapes["images"]["shape"][1:])
        self._image_bytes = int(np.prod(self.image_shape))
        self._classes: list[tuple[ShardRow, int, int]] | None = None
        self._counts: np.ndarray | None = None
        self._metas: list[dict[str, Any]] = []
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (shipped to Ray actors): the image cache stays behind."""
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state

    def _load(self) -> list[tuple[ShardRow, int, int]]:
        if self._classes is None:
            rows = self._store.rows
            self._store.index_many(rows)
            classes, metas = [], []
            for row in rows:
                for i, span in enumerate(self._store.index(row) or ()):
                    classes.append((row, i, span.count))
                    metas.append(dict(span.meta or {}))
            if not classes:
                raise ShardError(", ".join(r.path for r in rows),
                                 f"every class shard of split {self.split!r} is bad; nothing to read")
            self._classes, self._metas = classes, metas
            self._counts = np.array([c[2] for c in classes])
        return self._classes

    def verify(self) -> list[str]:
        """Check every file of the split now; return the skipped ones."""
        self._load()
        return list(self.skipped)

    @property
    def n_classes(self) -> int:
        return len(self._load())

    @property
    def names(self) -> list[str]:
        """The classes' source names, in pool order."""
        return [str(m.get("name")) for m in self.class_meta()]

    def class_meta(self) -> list[dict[str, Any]]:
        """Each class's record meta (its name, and where packed its ``superclass`` or
        ``ancestors``: the hierarchy samplers draw within), in pool order."""
        self._load()
        return self._metas

    def counts(self) -> np.ndarray:
        self._load()
        return self._counts  # type: ignore[return-value]

    def images(self, c: int, picks: np.ndarray) -> np.ndarray:
        """uint8 ``[len(picks), C, H, W]``: images ``picks`` of class ``c``."""
        row, i, _ = self._load()[c]
        out = np.empty((len(picks), *self.image_shape), np.uint8)
        missing = []
        for j, pick in enumerate(picks):
            hit = self._cache.get((c, int(pick)))
            if hit is None:
                missing.append(j)
            else:
                self._cache.move_to_end((c, int(pick)))
                out[j] = hit
        if missing:
            try:
                read = self._store.read_images(row, i, [int(picks[j]) for j in missing], self.image_shape)
            except ShardError as exc:
                self._store.mark_bad(row, exc)  # raises unless skipping
                raise
            for j, image in zip(missing, read, strict=True):
                out[j] = image
                self._remember((c, int(picks[j])), image)
        return out

    def _remember(self, key: tuple[int, int], image: np.ndarray) -> None:
        limit = int(self.cache_mb * 2**20) // max(self._image_bytes, 1)
        if limit < 1:
            return
        self._cache[key] = image
        while len(self._cache) > limit:
            self._cache.popitem(last=False)

    def describe(self) -> dict[str, Any]:
        """Facts from the manifest alone."""
        info = self.info
        return {"path": self.path, "split": self.split, "family": info.family, "params": info.params,
                "files": len(info.rows), "classes": info.classes, "images": info.images,
                "bytes": info.bytes, "image_shape": list(self.image_shape)}

    def close(self) -> None:
        self._store.close()

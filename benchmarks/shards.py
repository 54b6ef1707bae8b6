"""Class shards for the bench: Omniglot when its files are at hand, random images otherwise.

The bench never requires the Omniglot files: without them it writes classes of random 8-bit
images through the same writer (:func:`distmeta.data.pack_splits`), with the shapes of the
data set it stands for, so the readers do the same work. ``image_size=84, channels=3`` gives
mini-ImageNet-shaped classes (600 images each in the real set).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distmeta.data import ClassRecord, ShardLayout, SourceIdentity, pack_omniglot, pack_splits

log = logging.getLogger(__name__)
OMNIGLOT_CANDIDATES = ("$DISTMETA_OMNIGLOT", "/work/shared/data/omniglot", "~/.cache/distmeta/omniglot")
OMNIGLOT_FILES = ("omniglot28.npz", "images_background.npz")


@dataclass(frozen=True)
class PackedShards:
    """Where the shards are, what they hold, and how long packing took."""

    path: str
    source: str  # "omniglot" or "random"
    classes: int
    images: int
    files: int
    bytes: int
    pack_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "source": self.source, "classes": self.classes, "images": self.images,
                "files": self.files, "bytes": self.bytes, "pack_s": self.pack_s,
                "pack_images_per_s": self.images / self.pack_s if self.pack_s else None}


def omniglot_root() -> Path | None:
    """The first candidate directory holding Omniglot arrays, or ``None``."""
    for candidate in OMNIGLOT_CANDIDATES:
        path = Path(os.path.expandvars(os.path.expanduser(candidate)))
        if candidate.startswith("$") and candidate[1:] not in os.environ:
            continue
        if any((path / name).is_file() for name in OMNIGLOT_FILES):
            return path
    return None


def _random_classes(n: int, images: int, shape: tuple[int, int, int], seed: int, offset: int) -> Iterator[ClassRecord]:
    for c in range(n):
        rng = np.random.default_rng([seed, offset + c])
        yield ClassRecord(rng.integers(0, 256, (images, *shape), dtype=np.uint8), f"random{offset + c:05d}")


def pack_random(out_dir: str, classes: int, images: int = 20, image_size: int = 28, channels: int = 1,
                seed: int = 0, maxcount: int = 16, splits: tuple[str, ...] = ("train",)) -> None:
    """Classes of random images: ``classes`` per split, ``images`` each."""
    shape = (channels, image_size, image_size)
    source = SourceIdentity("random-images", "0" * 64, {"generator": "benchmarks.shards", "seed": seed})
    parts = {s: _random_classes(classes, images, shape, seed, i * classes) for i, s in enumerate(splits)}
    pack_splits(out_dir, parts, dataset="random", source=source,
                params={"image_size": [image_size, image_size], "channels": channels},
                layout=ShardLayout(maxcount=maxcount, maxsize=256e6))


def _stat(out_dir: str, source: str, seconds: float) -> PackedShards:
    from distmeta.data import Manifest

    info = Manifest.read(out_dir).split("train")
    return PackedShards(out_dir, source, info.classes, info.images, len(info.rows), info.bytes, seconds)


def pack_bench_shards(out_dir: str, maxcount: int = 16, prefer_omniglot: bool = True,
                      random_classes: int = 200) -> PackedShards:
    """Omniglot class shards under ``out_dir`` if found (and preferred), else random 28x28 classes."""
    root = omniglot_root() if prefer_omniglot else None
    start = time.perf_counter()
    source = "random"
    if root is not None:
        try:
            pack_omniglot(root, out_dir, layout=ShardLayout(maxcount=maxcount, maxsize=256e6))
            source = "omniglot"
        except (OSError, ValueError) as exc:
            log.warning("packing Omniglot from %s failed (%s); using random images", root, exc)
    if source == "random":
        pack_random(out_dir, random_classes, maxcount=maxcount, splits=("train", "val", "test"))
    return _stat(out_dir, source, time.perf_counter() - start)


def pack_image_classes(out_dir: str, classes: int, images: int, image_size: int = 84,
                       maxcount: int = 8) -> PackedShards:
    """Random RGB classes (mini-ImageNet-shaped at 84 px), train split only."""
    start = time.perf_counter()
    pack_random(out_dir, classes, images, image_size, 3, maxcount=maxcount)
    return _stat(out_dir, "random", time.perf_counter() - start)

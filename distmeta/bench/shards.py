"""Episode shards for the bench: Omniglot when its files are at hand, random images otherwise.

The bench never requires the Omniglot files: without them it writes N-way K-shot episodes of
random 8-bit images through the writer API (``write_split`` + ``publish``), with the same
shapes, dtype (uint8 storage) and manifest family (``omniglot``) as a real pack, so the
readers do the same work.
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

from distmeta.data import (
    ShardLayout,
    SourceIdentity,
    SplitSpec,
    pack_omniglot,
    publish,
    write_split,
)
from distmeta.data.episode import EpisodeRecord
from distmeta.tasks import ImageClasses, episode_rng

log = logging.getLogger(__name__)
OMNIGLOT_CANDIDATES = ("$DISTMETA_OMNIGLOT", "/work/shared/data/omniglot", "~/.cache/distmeta/omniglot")
OMNIGLOT_FILES = ("omniglot28.npz", "images_background.npz")


@dataclass(frozen=True)
class PackedShards:
    """Where the shards are, what they hold, and how long packing took."""

    path: str
    source: str  # "omniglot" or "random"
    episodes: int
    files: int
    bytes: int
    pack_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "source": self.source, "episodes": self.episodes, "files": self.files,
                "bytes": self.bytes, "pack_s": self.pack_s,
                "pack_episodes_per_s": self.episodes / self.pack_s if self.pack_s else None}


def omniglot_root() -> Path | None:
    """The first candidate directory holding Omniglot arrays, or ``None``."""
    for candidate in OMNIGLOT_CANDIDATES:
        path = Path(os.path.expandvars(os.path.expanduser(candidate)))
        if candidate.startswith("$") and candidate[1:] not in os.environ:
            continue
        if any((path / name).is_file() for name in OMNIGLOT_FILES):
            return path
    return None


def _random_records(n: int, way: int, shot: int, query: int, seed: int) -> Iterator[EpisodeRecord]:
    """Episodes of random 8-bit images, drawn in chunks of 64 like the Omniglot packer."""
    rng = np.random.default_rng(seed)
    pool = ImageClasses(rng.integers(0, 256, (200, 20, 28, 28), dtype=np.uint8), way, shot, query)
    for chunk, start in enumerate(range(0, n, 64)):
        drawn = pool.draw(min(64, n - start), episode_rng(seed, chunk, 0))
        for t in range(len(drawn.classes)):
            meta = {"family": "omniglot", "split": "train", "index": start + t, "seed": seed, "way": way,
                    "shot": shot, "query": query, "source_classes": drawn.classes[t].tolist()}
            yield EpisodeRecord(drawn.support_x[t], drawn.support_y[t], drawn.query_x[t], drawn.query_y[t], meta)


def pack_random(out_dir: str, episodes: int, way: int = 5, shot: int = 1, query: int = 1,
                seed: int = 0, maxcount: int = 50) -> None:
    """Random-image N-way K-shot episodes, packed like ``distmeta data pack omniglot``."""
    params = {"way": way, "shot": shot, "query": query, "rotations": False, "image_size": 28,
              "x_dtype": "uint8", "random_images": True}
    source = SourceIdentity("random-images", "0" * 64, {"generator": "distmeta.bench.shards", "seed": seed})
    spec = SplitSpec("train", "omniglot", params, "cross_entropy", seed, source)
    layout = ShardLayout(maxcount=maxcount, x_dtype="uint8")
    rows = write_split(out_dir, spec, _random_records(episodes, way, shot, query, seed), layout=layout)
    publish(out_dir, rows)


def pack_bench_shards(out_dir: str, episodes: int, query: int = 1, maxcount: int = 50,
                      prefer_omniglot: bool = True) -> PackedShards:
    """5-way 1-shot shards under ``out_dir``: Omniglot if found (and preferred), else random images."""
    root = omniglot_root() if prefer_omniglot else None
    start = time.perf_counter()
    if root is not None:
        try:
            pack_omniglot(root, out_dir, {"train": episodes}, way=5, shot=1, query=query,
                          layout=ShardLayout(maxcount=maxcount, x_dtype="uint8"))
            source = "omniglot"
        except (OSError, ValueError) as exc:
            log.warning("packing Omniglot from %s failed (%s); using random images", root, exc)
            root = None
    if root is None:
        pack_random(out_dir, episodes, query=query, maxcount=maxcount)
        source = "random"
    seconds = time.perf_counter() - start
    tars = sorted(Path(out_dir).glob("train-*.tar"))
    return PackedShards(out_dir, source, episodes, len(tars), sum(p.stat().st_size for p in tars), seconds)

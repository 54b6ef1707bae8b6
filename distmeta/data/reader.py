"""Reading packed episodes: a training source keyed by (seed, step, shard), and an
evaluation reader that visits every episode of a split exactly once.

Logical shards. The split's shard files, in manifest order, are dealt round-robin to the
``n_logical_shards`` logical shards: logical shard ``r`` owns files ``r, r + R, r + 2R ...``
and reads nothing else (never webdataset's rank / world-size guessing, which sees world
size 1 inside a Ray actor).

Determinism: indexed access, not a stream position. Each file is indexed once, on first use
(see :mod:`distmeta.data.store`), and episodes are then read by (file, index). Logical shard
``r`` sees its ``E_r`` episodes as an endless sequence of epochs, each a permutation drawn
from ``episode_rng(seed, epoch, r, stream=data_seed)``; step ``t`` of ``n_tasks`` tasks takes
positions ``t * n_tasks ... (t + 1) * n_tasks - 1`` of that sequence. So a batch is a pure
function of (seed, step, shard) and of the files on disk: a restarted worker, or another
worker that takes the shard over, needs no saved state to replay it exactly.

Files are checked on first use (sha256, tar structure, every episode's shapes); the files a
batch needs are checked ``index_workers`` at a time in threads. ``verify="open"`` checks them
all at construction instead.

Bad files. ``on_error="raise"`` (default) raises :class:`ShardError` naming the file.
``on_error="skip"`` logs it, adds it to ``skipped``, and takes the episode at the next
position of the sequence instead (deterministic, since a file's verdict depends only on
its bytes).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from distmeta.data.episode import EpisodeRecord, decode_array, stack
from distmeta.data.errors import ManifestError, ShardError
from distmeta.data.manifest import Manifest, ShardRow, SplitInfo, join
from distmeta.data.store import OnError, ReadStats, ShardStore
from distmeta.seeding import episode_rng
from distmeta.types import EpisodeBatch

_Drawn = tuple[ShardRow, int, EpisodeRecord]


@dataclass(frozen=True)
class LogicalShard:
    """The shard files one logical shard owns, and where each file's episodes start."""

    index: int
    rows: tuple[ShardRow, ...]
    offsets: np.ndarray  # [len(rows) + 1] cumulative episode counts

    @classmethod
    def deal(cls, rows: tuple[ShardRow, ...], index: int, n_shards: int) -> LogicalShard:
        own = rows[index::n_shards]
        return cls(index, own, np.cumsum([0] + [r.episodes for r in own]))

    @property
    def episodes(self) -> int:
        return int(self.offsets[-1])

    def locate(self, episode: int) -> tuple[ShardRow, int]:
        """(file, index in file) of the logical shard's ``episode``-th episode."""
        j = int(np.searchsorted(self.offsets, episode, side="right")) - 1
        return self.rows[j], episode - int(self.offsets[j])


def _deal(info: SplitInfo, n_logical_shards: int) -> list[LogicalShard]:
    n_files = len(info.rows)
    if not 1 <= n_logical_shards <= n_files:
        raise ManifestError(
            f"n_logical_shards={n_logical_shards}: split {info.name!r} has {n_files} shard file(s), "
            "and each logical shard needs at least one; repack with smaller shards (maxcount)")
    return [LogicalShard.deal(info.rows, r, n_logical_shards) for r in range(n_logical_shards)]


class OverStore:
    """What a reader over one split's :class:`ShardStore` reports: its manifest and split,
    read stats, skipped files."""

    _store: ShardStore

    @property
    def manifest(self) -> Manifest:
        return self._store.manifest

    @property
    def info(self) -> SplitInfo:
        return self._store.info

    @property
    def stats(self) -> ReadStats:
        return self._store.stats

    @property
    def skipped(self) -> list[str]:
        return self._store.skipped


class ShardEpisodeSource(OverStore):
    """A task family backed by packed shards: ``sample(n_tasks, seed, step, shard)``.

    Construction reads only the manifest. ``verify="open"`` checks every file up front
    instead of on first use. ``loss`` is the packed family's loss.
    """

    def __init__(self, path: str, split: str = "train", seed: int = 0, n_logical_shards: int = 1,
                 on_error: OnError = "raise", verify: Literal["lazy", "open"] = "lazy",
                 index_workers: int = 2) -> None:
        if verify not in ("lazy", "open"):
            raise ValueError(f"verify={verify!r}: expected 'lazy' or 'open'")
        self.path, self.split, self.seed = path, split, seed
        self.n_logical_shards = n_logical_shards
        self._store = ShardStore(path, split, on_error, index_workers=index_workers)
        self.loss: str = self._store.info.loss
        self._shards = _deal(self._store.info, n_logical_shards)
        self._perms: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        if verify == "open":
            self.verify()

    def check_compatible(self, **expected: Any) -> None:
        """:class:`ManifestError` unless the packed family matches (``way=5, shot=1 ...``)."""
        self.info.check_compatible(**expected)

    def files(self, shard: int) -> list[str]:
        """The shard files logical shard ``shard`` reads, and no other shard does."""
        return [r.path for r in self._logical(shard).rows]

    def verify(self, shard: int | None = None) -> list[str]:
        """Check every file (of one logical shard, or all) now; return the skipped ones."""
        shards = self._shards if shard is None else [self._logical(shard)]
        self._store.index_many([row for logical in shards for row in logical.rows])
        return list(self.skipped)

    def describe(self) -> dict[str, Any]:
        """Cheap facts for throughput planning, from the manifest alone."""
        info = self.info
        return {
            "path": self.path, "split": self.split, "family": info.family, "params": info.params,
            "loss": self.loss, "files": len(info.rows), "episodes": info.episodes,
            "bytes": info.bytes, "bytes_per_episode": info.bytes / max(info.episodes, 1),
            "logical_shards": [{"files": len(s.rows), "episodes": s.episodes} for s in self._shards],
        }

    @property
    def b_star(self) -> np.ndarray | None:
        """The linear-representation ground truth ``B*`` stored beside the manifest, if any."""
        name = self.info.params.get("b_star_file")
        if name is None:
            return None
        with self._store.fs.open_input_file(join(self._store.base, name)) as f:
            return decode_array(f.read(), name, name)

    def sample(self, n_tasks: int, seed: int, step: int, shard: int) -> EpisodeBatch:
        """``n_tasks`` episodes of logical shard ``shard`` for ``step``: a pure function of
        (seed, step, shard, n_tasks) and the files."""
        return stack(self.records(n_tasks, seed, step, shard), self.loss)

    def records(self, n_tasks: int, seed: int, step: int, shard: int) -> list[EpisodeRecord]:
        """The episodes :meth:`sample` stacks, with their ``meta``."""
        return [rec for _, _, rec in self._draw(n_tasks, seed, step, shard)]

    def locate(self, n_tasks: int, seed: int, step: int, shard: int) -> list[tuple[str, int]]:
        """``(file, index in file)`` of each episode :meth:`sample` returns (provenance)."""
        return [(row.path, i) for row, i, _ in self._draw(n_tasks, seed, step, shard)]

    def _draw(self, n_tasks: int, seed: int, step: int, shard: int) -> list[_Drawn]:
        if n_tasks < 1 or step < 0 or seed < 0:
            raise ValueError(f"n_tasks={n_tasks}, step={step}, seed={seed}: need n_tasks >= 1, step >= 0, seed >= 0")
        logical = self._logical(shard)
        if logical.episodes == 0:
            raise ManifestError(f"{self.path}: logical shard {shard} owns no episodes ({len(self._store.rows)} files "
                                f"for {self.n_logical_shards} logical shards); pack more files or lower "
                                "runtime.logical_shards")
        positions = range(step * n_tasks, (step + 1) * n_tasks)
        self._store.index_many([self._row_at(logical, seed, q)[0] for q in positions])
        return [self._at(logical, seed, p) for p in positions]

    def _row_at(self, logical: LogicalShard, seed: int, position: int) -> tuple[ShardRow, int]:
        """(file, index in file) at ``position`` of the logical shard's episode sequence."""
        n = logical.episodes
        return logical.locate(int(self._permutation(seed, logical.index, position // n, n)[position % n]))

    def _at(self, logical: LogicalShard, seed: int, position: int) -> _Drawn:
        for q in range(position, position + 2 * logical.episodes):
            row, i = self._row_at(logical, seed, q)
            if self._store.index(row) is None:
                continue
            try:
                return row, i, self._store.read(row, i)
            except ShardError as exc:
                self._store.mark_bad(row, exc)
        raise ShardError(", ".join(r.path for r in logical.rows),
                         f"every shard file of logical shard {logical.index} is bad; nothing to read")

    def _permutation(self, seed: int, shard: int, epoch: int, n: int) -> np.ndarray:
        key = (seed, shard, epoch)
        perm = self._perms.get(key)
        if perm is None:
            perm = episode_rng(seed, epoch, shard, stream=self.seed).permutation(n)
            self._perms[key] = perm
            while len(self._perms) > 4:
                self._perms.popitem(last=False)
        return perm

    def _logical(self, shard: int) -> LogicalShard:
        if not 0 <= shard < self.n_logical_shards:
            raise ValueError(f"shard={shard}: expected 0 <= shard < n_logical_shards={self.n_logical_shards}")
        return self._shards[shard]

    def close(self) -> None:
        self._store.close()


class EpisodeReader(OverStore):
    """Evaluation: every episode of a split (or of one logical shard) exactly once, in order."""

    def __init__(self, path: str, split: str = "test", *, shard: int = 0, n_logical_shards: int = 1,
                 on_error: OnError = "raise", index_workers: int = 2) -> None:
        self._store = ShardStore(path, split, on_error, index_workers=index_workers)
        if not 0 <= shard < n_logical_shards:
            raise ValueError(f"shard={shard}: expected 0 <= shard < n_logical_shards={n_logical_shards}")
        self._logical = _deal(self._store.info, n_logical_shards)[shard]
        self.loss: str = self._store.info.loss

    @property
    def episodes(self) -> int:
        """Episodes this reader will yield if no file is skipped (from the manifest)."""
        return self._logical.episodes

    def records(self) -> Iterator[EpisodeRecord]:
        """Each episode once, file by file in manifest order; bad files skipped if allowed."""
        rows, group = self._logical.rows, max(self._store.index_workers, 1)
        for k, row in enumerate(rows):
            if k % group == 0:
                self._store.index_many(rows[k:k + group])
            spans = self._store.index(row)
            for i in range(len(spans or ())):
                try:
                    record = self._store.read(row, i)
                except ShardError as exc:
                    self._store.mark_bad(row, exc)
                    break
                yield record

    def batches(self, batch_size: int) -> Iterator[EpisodeBatch]:
        """Episodes in batches of ``batch_size`` (the last may be smaller)."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        chunk: list[EpisodeRecord] = []
        for record in self.records():
            chunk.append(record)
            if len(chunk) == batch_size:
                yield stack(chunk, self.loss)
                chunk = []
        if chunk:
            yield stack(chunk, self.loss)


def iter_episodes(path: str, split: str = "test", batch_size: int = 32, *, shard: int = 0,
                  n_logical_shards: int = 1, on_error: OnError = "raise") -> Iterator[EpisodeBatch]:
    """Every episode of ``split`` exactly once, in order, as batches of ``batch_size``."""
    reader = EpisodeReader(path, split, shard=shard, n_logical_shards=n_logical_shards,
                           on_error=on_error)
    yield from reader.batches(batch_size)

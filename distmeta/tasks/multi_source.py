"""Meta-Dataset's task family (Triantafillou et al. 2020): variable-way, variable-shot episodes
from one or several sources, each with its own class pool, splits and hierarchy.

An episode's source is drawn first (uniformly, or by ``weights``), then the episode is
described by the official sampler (:mod:`distmeta.tasks.variable`) over that source's
classes and its images read: the support set class by class in label order (labels
0..way-1), then the query set. Each episode is one task (an :class:`EpisodeBatch` of one);
a step's tasks come as :class:`EpisodeGroups` (same-sized tasks grouped), drawn in order from
``episode_rng(seed, step, shard)``: a pure function of (seed, step, logical shard), whatever
the worker count. Held-out episodes are numbered per source: episode ``i`` of source ``s``
uses ``episode_rng(seed, i, stream, 1 + s)``, the same for every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from distmeta.errors import DataError
from distmeta.seeding import episode_rng
from distmeta.tasks.images import as_float
from distmeta.tasks.variable import EpisodeShape, Hierarchy, describe
from distmeta.types import EpisodeBatch, EpisodeGroups


@dataclass(frozen=True)
class SourcePool:
    """One source: its name, the split's class pool and the classes' hierarchy (if any)."""

    name: str
    pool: Any = field(repr=False)

    def hierarchy(self, shape: EpisodeShape) -> Hierarchy | None:
        metas = getattr(self.pool, "class_meta", None)
        return Hierarchy.from_meta(metas(), shape.min_ways) if metas is not None and shape.use_hierarchy else None


@dataclass(frozen=True)
class MultiSourceEpisodes:
    """The family: ``sources`` (:class:`SourcePool`), the episode ``shape``, source ``weights``."""

    sources: tuple[SourcePool, ...]
    shape: EpisodeShape = field(default_factory=EpisodeShape)
    weights: tuple[float, ...] | None = None
    _hierarchies: dict[int, Hierarchy | None] = field(default_factory=dict, repr=False, compare=False)

    loss = "cross_entropy"

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("data.sources: no sources")
        shapes = {s.name: tuple(s.pool.image_shape) for s in self.sources}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"data.sources: the sources' images differ in size {shapes}; pack every source at "
                             "one --image-size")
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float64)
            if len(w) != len(self.sources) or (w < 0).any() or w.sum() <= 0:
                raise ValueError(f"data.source_weights={list(self.weights)}: expected {len(self.sources)} "
                                 "non-negative weights, not all zero, one per data.sources entry")

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.sources[0].pool.image_shape)

    def _hierarchy(self, s: int) -> Hierarchy | None:
        if s not in self._hierarchies:
            self._hierarchies[s] = self.sources[s].hierarchy(self.shape)
        return self._hierarchies[s]

    def _probabilities(self) -> np.ndarray | None:
        if self.weights is None:
            return None
        w = np.asarray(self.weights, dtype=np.float64)
        return w / w.sum()

    def episode(self, rng: np.random.Generator, s: int) -> EpisodeBatch:
        """One episode of source ``s``, as a batch of one task."""
        pool = self.sources[s].pool
        counts = pool.counts()
        try:
            classes, shots, query = describe(rng, counts, self.shape, self._hierarchy(s))
        except ValueError as exc:
            where = getattr(pool, "path", "")
            raise DataError(f"source {self.sources[s].name!r} ({where}, split {getattr(pool, 'split', '?')!r}): "
                             f"{exc}") from None
        support, query_x = [], []
        for c, k in zip(classes, shots, strict=True):
            picks = rng.choice(int(counts[int(c)]), int(k) + query, replace=False)
            images = as_float(pool.images(int(c), picks))
            support.append(images[:k])
            query_x.append(images[k:])
        way = len(classes)
        sy = np.repeat(np.arange(way), shots)
        qy = np.repeat(np.arange(way), query)
        t = torch.from_numpy
        return EpisodeBatch(t(np.concatenate(support))[None], t(sy)[None], t(np.concatenate(query_x))[None],
                            t(qy)[None], "cross_entropy", way)

    def draw(self, n_tasks: int, rng: np.random.Generator) -> list[tuple[int, EpisodeBatch]]:
        """``n_tasks`` episodes, each from a source drawn first: ``(source, episode)``."""
        p = self._probabilities()
        out = []
        for _ in range(n_tasks):
            s = int(rng.choice(len(self.sources), p=p))
            out.append((s, self.episode(rng, s)))
        return out

    def sample(self, n_tasks: int, seed: int, step: int, shard: int) -> EpisodeGroups:
        """Training tasks of logical shard ``shard`` at ``step``."""
        return EpisodeGroups.of([b for _, b in self.draw(n_tasks, episode_rng(seed, step, shard))])

    def numbered(self, first: int, count: int, seed: int, stream: int, source: int = 0) -> EpisodeGroups:
        """Held-out episodes ``first .. first + count - 1`` of source ``source``."""
        return EpisodeGroups.of([self.episode(episode_rng(seed, i, stream, 1 + source), source)
                                 for i in range(first, first + count)])

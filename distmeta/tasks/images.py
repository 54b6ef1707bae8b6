"""N-way K-shot image classification sampled from a pool of classes (Vinyals et al. 2016;
the Omniglot and mini-ImageNet protocols of Finn et al. 2017 and Ravi & Larochelle 2017).

A pool holds classes of images (in memory, :class:`ArrayPool`, or class shards on disk,
:class:`distmeta.data.ClassShards`). A task draws ``way`` classes from the whole pool, then
``shot + query`` distinct images of each; labels 0..way-1 follow the random class order.
With ``rotations=True`` every class also appears rotated by 90, 180 and 270 degrees as
three new classes (Santoro et al. 2016; Finn et al. 2017's Omniglot meta-training).

Training draws fresh tasks at every step: step ``t`` of logical shard ``r`` uses the
generator ``episode_rng(seed, t, r)``, so its tasks depend on nothing else (not on the
worker count, the order of draws or a restart), and every logical shard draws from the
whole pool. Held-out episodes are numbered: episode ``i`` of a split uses
``episode_rng(seed, i, stream)``, so a fixed seed gives the same evaluation tasks to
every run, whatever the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from distmeta.seeding import episode_rng
from distmeta.tasks.augment import Augment
from distmeta.types import EpisodeBatch

LABELS = ("episode", "global")
"""``episode``: labels 0..way-1 in each task's random class order (few-shot tasks);
``global``: each image's class index in the pool (multi-task ERM pre-training over all
classes, the "normal SGD" baseline: Chen et al. 2019, Collins et al. 2022)."""


class ClassPool(Protocol):
    """Classes of images: how many, how many images each, and the images themselves."""

    @property
    def n_classes(self) -> int: ...

    @property
    def image_shape(self) -> tuple[int, ...]: ...

    def counts(self) -> np.ndarray: ...

    def images(self, c: int, picks: np.ndarray) -> np.ndarray: ...


class ArrayPool:
    """An in-memory pool, ``[classes, examples, H, W]`` or ``[classes, examples, C, H, W]``
    (uint8, or float in [0, 1])."""

    def __init__(self, images: np.ndarray) -> None:
        imgs = np.asarray(images)
        if imgs.ndim == 4:
            imgs = imgs[:, :, None]
        if imgs.ndim != 5:
            raise ValueError(f"task.images has shape {imgs.shape}: expected [classes, examples, H, W] "
                             "or [classes, examples, C, H, W]")
        if imgs.dtype != np.uint8 and imgs.dtype != np.float32:
            imgs = imgs.astype(np.float32)
        self.array = imgs

    @property
    def n_classes(self) -> int:
        return self.array.shape[0]

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[2:])

    def counts(self) -> np.ndarray:
        return np.full(self.array.shape[0], self.array.shape[1])

    def images(self, c: int, picks: np.ndarray) -> np.ndarray:
        return self.array[c, picks]


def as_float(x: np.ndarray) -> np.ndarray:
    """Images as float32 in [0, 1] (uint8 is divided by 255)."""
    return x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x.astype(np.float32, copy=False)


@dataclass(frozen=True)
class Episodes:
    """Arrays of a batch of episodes, plus the pool classes each task drew (for provenance)."""

    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray
    classes: np.ndarray  # [T, way] indices into the (rotation-augmented) class pool
    global_labels: bool = False  # labels are pool classes, not 0..way-1

    def batch(self) -> EpisodeBatch:
        t = torch.from_numpy
        return EpisodeBatch(t(self.support_x), t(self.support_y), t(self.query_x), t(self.query_y),
                            "cross_entropy", None if self.global_labels else int(self.classes.shape[1]))


@dataclass(frozen=True)
class ImageClasses:
    """The task family: N-way K-shot episodes from ``pool`` (a :class:`ClassPool` or an array)."""

    pool: Any = field(repr=False)
    way: int = 5
    shot: int = 1
    query: int = 15
    rotations: bool = False
    augment: Augment | None = None
    labels: str = "episode"

    loss = "cross_entropy"

    def __post_init__(self) -> None:
        if isinstance(self.pool, np.ndarray):
            object.__setattr__(self, "pool", ArrayPool(self.pool))
        if self.labels not in LABELS:
            raise ValueError(f"task.labels={self.labels!r}: expected one of {list(LABELS)}")
        if self.way < 2 or self.shot < 1 or self.query < 1:
            raise ValueError(f"task.way={self.way}, task.shot={self.shot}, task.query={self.query}: "
                             "need way >= 2, shot >= 1, query >= 1")
        if isinstance(self.pool, ArrayPool):
            self.check()

    def check(self) -> None:
        """``ValueError`` naming the key if the pool cannot give these episodes."""
        if self.way > self.n_classes:
            raise ValueError(f"task.way={self.way}: the pool has only {self.n_classes} classes")
        fewest = int(self.pool.counts().min())
        if self.shot + self.query > fewest:
            raise ValueError(f"task.shot + task.query = {self.shot + self.query}: the smallest class "
                             f"has only {fewest} images")

    @property
    def n_classes(self) -> int:
        return self.pool.n_classes * (4 if self.rotations else 1)

    def class_images(self, pool_class: int, examples: np.ndarray) -> np.ndarray:
        """Examples of a pool class; classes past the base count are 90-degree rotations."""
        base = self.pool.n_classes
        imgs = self.pool.images(pool_class % base, examples)
        turns = pool_class // base
        return np.rot90(imgs, k=turns, axes=(-2, -1)) if turns else imgs

    def draw(self, n_tasks: int, rng: np.random.Generator) -> Episodes:
        self.check()
        n, counts, base = self.shot + self.query, self.pool.counts(), self.pool.n_classes
        classes = np.stack([rng.choice(self.n_classes, self.way, replace=False) for _ in range(n_tasks)])
        shape = self.pool.image_shape
        xs = np.empty((n_tasks, self.way, n, *shape), dtype=np.float32)
        for t in range(n_tasks):
            for label, c in enumerate(classes[t]):
                picks = rng.choice(int(counts[int(c) % base]), n, replace=False)
                xs[t, label] = as_float(self.class_images(int(c), picks))
        if self.augment is not None:
            self.augment(xs.reshape(-1, *shape), rng)
        slots = classes if self.labels == "global" else np.arange(self.way)[None, :]
        labels = np.broadcast_to(slots[:, :, None], (n_tasks, self.way, n))
        k = self.shot
        return Episodes(
            np.ascontiguousarray(xs[:, :, :k].reshape(n_tasks, -1, *shape)),
            np.ascontiguousarray(labels[:, :, :k].reshape(n_tasks, -1)).astype(np.int64),
            np.ascontiguousarray(xs[:, :, k:].reshape(n_tasks, -1, *shape)),
            np.ascontiguousarray(labels[:, :, k:].reshape(n_tasks, -1)).astype(np.int64),
            classes, self.labels == "global",
        )

    def sample(self, n_tasks: int, seed: int, step: int, shard: int) -> EpisodeBatch:
        """Training tasks of logical shard ``shard`` at ``step``: fresh classes every step."""
        return self.draw(n_tasks, episode_rng(seed, step, shard)).batch()

    def numbered(self, first: int, count: int, seed: int, stream: int) -> EpisodeBatch:
        """Held-out episodes ``first .. first + count - 1`` of a fixed numbered set."""
        parts = [self.draw(1, episode_rng(seed, i, stream)) for i in range(first, first + count)]
        return Episodes(*(np.concatenate([getattr(p, f) for p in parts])
                          for f in ("support_x", "support_y", "query_x", "query_y", "classes"))).batch()

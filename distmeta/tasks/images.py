"""N-way K-shot image classification from an in-memory class pool (Vinyals et al. 2016;
the Omniglot protocol of Finn et al. 2017 and Santoro et al. 2016).

``images`` is an array ``[classes, examples, H, W]`` (or ``[classes, examples, C, H, W]``);
with ``rotations=True`` every class also appears rotated by 90, 180 and 270 degrees as three
new classes. A task draws ``way`` classes, then ``shot + query`` distinct examples of each;
labels 0..way-1 follow the random class order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from distmeta.tasks.seeding import episode_rng
from distmeta.types import EpisodeBatch


@dataclass(frozen=True)
class Episodes:
    """Arrays of a batch of episodes, plus the pool classes each task drew (for provenance)."""

    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray
    classes: np.ndarray  # [T, way] indices into the (rotation-augmented) class pool

    def batch(self) -> EpisodeBatch:
        t = torch.from_numpy
        return EpisodeBatch(t(self.support_x), t(self.support_y), t(self.query_x), t(self.query_y),
                            "cross_entropy")


@dataclass(frozen=True)
class ImageClasses:
    images: np.ndarray = field(repr=False)
    way: int = 5
    shot: int = 1
    query: int = 15
    rotations: bool = False

    loss = "cross_entropy"

    def __post_init__(self) -> None:
        imgs = np.asarray(self.images)
        if imgs.ndim == 4:
            imgs = imgs[:, :, None]
        if imgs.ndim != 5:
            raise ValueError(f"task.images has shape {imgs.shape}: expected [classes, examples, H, W] or [classes, examples, C, H, W]")
        if imgs.dtype != np.float32:
            imgs = imgs.astype(np.float32) / (255.0 if imgs.dtype == np.uint8 else 1.0)
        object.__setattr__(self, "images", imgs)
        if self.way < 2 or self.shot < 1 or self.query < 1:
            raise ValueError(f"task.way={self.way}, task.shot={self.shot}, task.query={self.query}: need way >= 2, shot >= 1, query >= 1")
        if self.way > self.n_classes:
            raise ValueError(f"task.way={self.way}: the pool has only {self.n_classes} classes")
        if self.shot + self.query > imgs.shape[1]:
            raise ValueError(f"task.shot + task.query = {self.shot + self.query}: classes have only {imgs.shape[1]} examples")

    @property
    def n_classes(self) -> int:
        return self.images.shape[0] * (4 if self.rotations else 1)

    def class_images(self, pool_class: int, examples: np.ndarray) -> np.ndarray:
        """Examples of a pool class; classes past the base count are 90-degree rotations."""
        base = self.images.shape[0]
        imgs = self.images[pool_class % base, examples]
        turns = pool_class // base
        return np.rot90(imgs, k=turns, axes=(-2, -1)) if turns else imgs

    def draw(self, n_tasks: int, rng: np.random.Generator) -> Episodes:
        n = self.shot + self.query
        classes = np.stack([rng.choice(self.n_classes, self.way, replace=False) for _ in range(n_tasks)])
        per_class = self.images.shape[1]
        xs = np.empty((n_tasks, self.way, n, *self.images.shape[2:]), dtype=np.float32)
        for t in range(n_tasks):
            for label, c in enumerate(classes[t]):
                xs[t, label] = self.class_images(int(c), rng.choice(per_class, n, replace=False))
        labels = np.broadcast_to(np.arange(self.way)[None, :, None], (n_tasks, self.way, n))
        shape = (n_tasks, -1, *self.images.shape[2:])
        k = self.shot
        return Episodes(
            np.ascontiguousarray(xs[:, :, :k].reshape(shape)),
            np.ascontiguousarray(labels[:, :, :k].reshape(n_tasks, -1)).astype(np.int64),
            np.ascontiguousarray(xs[:, :, k:].reshape(shape)),
            np.ascontiguousarray(labels[:, :, k:].reshape(n_tasks, -1)).astype(np.int64),
            classes,
        )

    def sample(self, n_tasks: int, seed: int, step: int, shard: int) -> EpisodeBatch:
        return self.draw(n_tasks, episode_rng(seed, step, shard)).batch()

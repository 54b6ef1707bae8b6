"""Task families: each samples an ``EpisodeBatch`` as a pure function of (seed, step, shard)."""

from __future__ import annotations

from typing import Protocol

from distmeta.seeding import episode_rng
from distmeta.tasks.augment import Augment
from distmeta.tasks.images import ArrayPool, ClassPool, Episodes, ImageClasses
from distmeta.tasks.linear_rep import LinearRepresentation, principal_angle_distance
from distmeta.tasks.registry import FAMILIES, IMAGE_FAMILIES, TASKS, build_task
from distmeta.tasks.sinusoid import Sinusoid
from distmeta.types import EpisodeBatch


class TaskFamily(Protocol):
    loss: str

    def sample(self, n_tasks: int, seed: int, step: int, shard: int) -> EpisodeBatch: ...


__all__ = ["FAMILIES", "IMAGE_FAMILIES", "TASKS", "ArrayPool", "Augment", "ClassPool", "Episodes", "build_task", "ImageClasses", "LinearRepresentation", "Sinusoid", "TaskFamily",
           "episode_rng", "principal_angle_distance"]

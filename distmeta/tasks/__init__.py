"""Task families: each samples an ``EpisodeBatch`` as a pure function of (seed, step, shard),
and the sources that give a run its training and held-out tasks (:mod:`distmeta.tasks.sources`)."""

from __future__ import annotations

from distmeta.seeding import episode_rng
from distmeta.tasks.augment import Augment
from distmeta.tasks.images import ArrayPool, ClassPool, Episodes, ImageClasses
from distmeta.tasks.linear_rep import LinearRepresentation, principal_angle_distance
from distmeta.tasks.registry import FAMILIES, IMAGE_FAMILIES, TASKS, build_task
from distmeta.tasks.sinusoid import Sinusoid

__all__ = ["FAMILIES", "IMAGE_FAMILIES", "TASKS", "ArrayPool", "Augment", "ClassPool", "Episodes", "ImageClasses",
           "LinearRepresentation", "Sinusoid", "build_task", "episode_rng", "principal_angle_distance"]

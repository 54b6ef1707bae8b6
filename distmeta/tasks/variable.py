"""Variable-way, variable-shot episodes: Meta-Dataset's episode sampler (Triantafillou et al.
2020, Section 3.2; ``meta_dataset/data/sampling.py`` and the ``EpisodeDescriptionConfig``
defaults of its ``data_config_common.gin``).

An episode is described first (which classes, how many support and query images of each),
then its images are read. For a split of ``n`` classes:

* **ways** uniform in ``[min_ways, min(max_ways_upper_bound, n)]`` (5 and 50);
* **classes** uniform without replacement; with a hierarchy, within it: Omniglot's classes
  within one alphabet (a superclass drawn uniformly among those of at least ``min_ways``
  classes, then the ways from its classes), ILSVRC's
  as the leaves spanned by one WordNet node drawn uniformly among the nodes spanning between
  ``min_ways`` and 392 leaves (at most ``max_ways_upper_bound`` of them, drawn uniformly);
* **query** per class ``min(max_num_query, min over the episode's classes of
  floor(images / 2))`` (10), the same for every class;
* **support size** ``min(max_support_set_size, sum_c floor(beta * min(100, remaining_c) + 1))``
  with ``beta ~ U(0, 1)`` (500 and ``max_support_size_contrib_per_class`` 100);
* **shots** per class from class-imbalance weights: ``images_c * exp(U(log 0.5, log 2))``
  normalised, ``floor(w_c * (size - ways)) + 1``, at most the class's remaining images.

Fixed ways (``num_ways``), shots (``num_support``, an int or an inclusive range) and query
(``num_query``) give the paper's ablation modes. Every draw comes from the generator passed
in (``episode_rng(seed, step, shard)`` in training), so an episode is a pure function of it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)
MAX_SPANNING_LEAVES = 392
"""ILSVRC nodes spanning more leaves than this are not drawn (the official sampler's bound)."""


@dataclass(frozen=True)
class EpisodeShape:
    """How episodes are sized (``EpisodeDescriptionConfig``); ``None`` keeps a size variable."""

    num_ways: int | None = None
    num_support: int | tuple[int, int] | None = None
    num_query: int | None = None
    min_ways: int = 5
    max_ways_upper_bound: int = 50
    max_num_query: int = 10
    max_support_set_size: int = 500
    max_support_size_contrib_per_class: int = 100
    min_log_weight: float = math.log(0.5)
    max_log_weight: float = math.log(2.0)
    use_hierarchy: bool = True
    ignore_hierarchy_probability: float = 0.0
    min_examples_in_class: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.num_support, list):
            object.__setattr__(self, "num_support", tuple(self.num_support))
        checks = {"task.min_ways": (self.min_ways, self.min_ways >= 2),
                  "task.max_ways_upper_bound": (self.max_ways_upper_bound, self.max_ways_upper_bound >= self.min_ways),
                  "task.max_num_query": (self.max_num_query, self.max_num_query >= 1),
                  "task.max_support_set_size": (self.max_support_set_size, self.max_support_set_size >= 1),
                  "task.max_support_size_contrib_per_class": (self.max_support_size_contrib_per_class,
                                                              self.max_support_size_contrib_per_class >= 1),
                  "task.min_log_weight": (self.min_log_weight, self.min_log_weight <= self.max_log_weight),
                  "task.ignore_hierarchy_probability": (self.ignore_hierarchy_probability,
                                                        0.0 <= self.ignore_hierarchy_probability <= 1.0),
                  "task.num_ways": (self.num_ways, self.num_ways is None or self.num_ways >= 2),
                  "task.num_query": (self.num_query, self.num_query is None or self.num_query >= 1)}
        shots = self.num_support
        if isinstance(shots, tuple):
            checks["task.num_support"] = (shots, len(shots) == 2 and 1 <= shots[0] <= shots[1])
        elif shots is not None:
            checks["task.num_support"] = (shots, shots >= 1)
        for key, (value, ok) in checks.items():
            if not ok:
                raise ValueError(f"{key}={value!r} is out of range (min_ways >= 2, max_ways_upper_bound >= "
                                 "min_ways, sizes >= 1, min_log_weight <= max_log_weight, probability in [0, 1], "
                                 "num_support an int >= 1 or [lo, hi])")

    @property
    def max_support(self) -> int | None:
        shots = self.num_support
        return shots[1] if isinstance(shots, tuple) else shots


@dataclass(frozen=True)
class Hierarchy:
    """Groups of a split's classes that an episode may be drawn within: Omniglot's alphabets
    (``kind="bilevel"``) or the leaves spanned by each ILSVRC node (``kind="dag"``)."""

    kind: str
    groups: tuple[tuple[int, ...], ...]

    @classmethod
    def from_meta(cls, metas: Sequence[dict[str, Any]], min_ways: int) -> Hierarchy | None:
        """From the classes' records: ``superclass`` (bilevel) or ``ancestors`` (DAG)."""
        if metas and all("superclass" in m for m in metas):
            by: dict[str, list[int]] = {}
            for c, m in enumerate(metas):
                by.setdefault(str(m["superclass"]), []).append(c)
            groups = tuple(tuple(v) for _, v in sorted(by.items()) if len(v) >= min_ways)
            if not groups:
                raise ValueError(f"task.min_ways={min_ways}: no superclass has that many classes (the largest "
                                 f"has {max(map(len, by.values()))}); lower task.min_ways or set "
                                 "task.use_hierarchy=false")
            if len(groups) < len(by):
                logger.info("%d of %d superclasses have fewer than task.min_ways=%d classes; episodes are drawn "
                            "within the other %d", len(by) - len(groups), len(by), min_ways, len(groups))
            return cls("bilevel", groups)
        if metas and any(m.get("ancestors") for m in metas):
            span: dict[str, list[int]] = {}
            for c, m in enumerate(metas):
                for node in m.get("ancestors", ()):
                    span.setdefault(str(node), []).append(c)
            groups = tuple(tuple(v) for _, v in sorted(span.items()) if min_ways <= len(v) <= MAX_SPANNING_LEAVES)
            if not groups:
                raise ValueError(f"task.min_ways={min_ways}: no node of the class DAG spans between {min_ways} "
                                 f"and {MAX_SPANNING_LEAVES} classes")
            return cls("dag", groups)
        return None


def _ways(rng: np.random.Generator, n: int, shape: EpisodeShape) -> int:
    if shape.num_ways is not None:
        return shape.num_ways
    return int(rng.integers(shape.min_ways, min(shape.max_ways_upper_bound, n) + 1))


def sample_classes(rng: np.random.Generator, eligible: np.ndarray, shape: EpisodeShape,
                   hierarchy: Hierarchy | None) -> np.ndarray:
    """The episode's classes (indices into the split's pool), in label order."""
    use = hierarchy is not None and shape.use_hierarchy and shape.num_ways is None
    if use and shape.ignore_hierarchy_probability and rng.uniform() < shape.ignore_hierarchy_probability:
        use = False
    if use and hierarchy.kind == "dag":  # type: ignore[union-attr]
        leaves = np.array(hierarchy.groups[int(rng.integers(len(hierarchy.groups)))])  # type: ignore[union-attr]
        if len(leaves) > shape.max_ways_upper_bound:
            leaves = rng.choice(leaves, shape.max_ways_upper_bound, replace=False)
        return leaves
    if use:
        group = np.array(hierarchy.groups[int(rng.integers(len(hierarchy.groups)))])  # type: ignore[union-attr]
        return rng.choice(group, _ways(rng, len(group), shape), replace=False)
    return rng.choice(eligible, _ways(rng, len(eligible), shape), replace=False)


def _query(images: np.ndarray, shape: EpisodeShape) -> int:
    if shape.num_query is not None:
        return shape.num_query
    if shape.max_support is None:
        return int(min(shape.max_num_query, (images // 2).min()))
    return int(min(shape.max_num_query, images.min() - shape.max_support))


def _shots(rng: np.random.Generator, images: np.ndarray, query: int, shape: EpisodeShape) -> np.ndarray:
    if isinstance(shape.num_support, tuple):
        return np.full(len(images), int(rng.integers(shape.num_support[0], shape.num_support[1] + 1)))
    if shape.num_support is not None:
        return np.full(len(images), shape.num_support)
    remaining = images - query
    beta = rng.uniform()
    size = min(int(np.floor(beta * np.minimum(shape.max_support_size_contrib_per_class, remaining) + 1).sum()),
               shape.max_support_set_size)
    weights = images * np.exp(rng.uniform(shape.min_log_weight, shape.max_log_weight, size=images.shape))
    desired = np.floor(weights / weights.sum() * (size - len(images))).astype(np.int64) + 1
    return np.minimum(desired, remaining)


def describe(rng: np.random.Generator, counts: np.ndarray, shape: EpisodeShape,
             hierarchy: Hierarchy | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """One episode's ``(classes, shots per class, query per class)``."""
    eligible = np.flatnonzero(counts >= max(shape.min_examples_in_class, 1))
    if len(eligible) < (shape.num_ways or shape.min_ways):
        raise ValueError(f"task.min_ways={shape.min_ways} (task.num_ways={shape.num_ways}): the split has only "
                         f"{len(eligible)} classes with at least {shape.min_examples_in_class} images")
    classes = sample_classes(rng, eligible, shape, hierarchy)
    images = counts[classes]
    query = _query(images, shape)
    shots = _shots(rng, images, query, shape)
    if query < 1 or (shots < 1).any() or (shots + query > images).any():
        raise ValueError(f"classes {classes[:5].tolist()} with {images[:5].tolist()} images cannot give {query} "
                         f"query and shots {shots[:5].tolist()}; lower task.num_query / task.num_support")
    return classes, shots, query

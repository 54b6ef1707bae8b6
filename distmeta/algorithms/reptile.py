"""Reptile: Nichol, Achiam, Schulman, "On First-Order Meta-Learning Algorithms", 2018.

After K steps of SGD on the support set, phi_K, the meta-gradient is theta - phi_K
(Algorithm 1: theta <- theta + epsilon (phi_K - theta), i.e. SGD with learning rate epsilon on
theta - phi_K). Parameters that do not adapt receive a zero meta-gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from distmeta.algorithms.base import AdaptingRule
from distmeta.algorithms.chunk import Chunk, Sums, adaptation_metrics
from distmeta.algorithms.inner import InnerLoop


@dataclass(frozen=True)
class Displacement:
    """theta - phi_K of a loop run without a graph, summed over tasks; zero for what does not
    adapt."""

    def gradient(self, c: Chunk, loop: InnerLoop) -> Sums:
        fast, first = loop.run(c, second_order=False)
        moved = c.task_sum({k: c.start[k] - fast[k] for k in fast})
        grads = {k: moved[k] if k in moved else torch.zeros_like(v) for k, v in c.theta.items()}
        return grads, adaptation_metrics(c, fast, first)


@dataclass(frozen=True)
class Reptile(AdaptingRule):
    """Reptile: ``Reptile(inner_lr=0.1, inner_steps=5)``; use the outer SGD lr as epsilon."""

    config_name: ClassVar[str] = "reptile"
    fuses_shards: ClassVar[bool] = True

    def outer_gradient(self, c: Chunk) -> Displacement:
        return Displacement()

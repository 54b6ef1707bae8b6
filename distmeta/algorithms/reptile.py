"""Reptile: Nichol, Achiam, Schulman, "On First-Order Meta-Learning Algorithms", 2018.

After K steps of SGD on the support set, phi_K, the meta-gradient is theta - phi_K
(Algorithm 1: theta <- theta + epsilon (phi_K - theta), i.e. SGD with learning rate epsilon on
theta - phi_K). Parameters that do not adapt receive a zero meta-gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distmeta.algorithms.base import AdaptingRule, Sums
from distmeta.algorithms.chunk import Chunk, adaptation_metrics, inner_loop


@dataclass(frozen=True)
class Reptile(AdaptingRule):
    """Reptile: ``Reptile(inner_lr=0.1, inner_steps=5)``; use the outer SGD lr as epsilon."""

    def chunk_gradient(self, c: Chunk) -> Sums:
        fast, first = inner_loop(c, self, self.inner_steps, False, self.inner_objective(c))
        moved = c.task_sum({k: c.start[k] - fast[k] for k in fast})
        grads = {k: moved[k] if k in moved else torch.zeros_like(v) for k, v in c.theta.items()}
        return grads, adaptation_metrics(c, fast, first)

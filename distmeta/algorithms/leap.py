"""Leap: Flennerhag, Moreno, Lawrence, Damianou, "Transferring Knowledge across Learning
Processes", ICLR 2019.

The initialisation theta is learned by shortening the expected length of the inner training
path theta_0 = theta, theta_1, ..., theta_K on the loss surface, whose points are
(theta_i, L(theta_i)) when ``loss_dim`` is on (the paper's default), else theta_i alone.
The meta-gradient is first order (nothing is differentiated through the loop, Section 3):
each step i contributes, with dL_i = L(theta_{i+1}) - L(theta_i),

    Delta_i = (theta_i - theta_{i+1}) - dL_i * grad L(theta_i)

divided, for the path length (``norm``: the d1 distance of the paper's code), by the step's
length sqrt(||theta_{i+1} - theta_i||^2 + dL_i^2); without ``norm`` it is the gradient of half
the squared lengths (d2). The stabiliser of the paper's code (amzn/metalearn-leap) uses
-|dL_i| for dL_i, so a step that climbs the loss is not rewarded for it. Delta is accumulated
during the inner loop, so memory does not depend on the inner steps; the outer step then
averages over tasks like any other meta-gradient. Parameters that do not adapt get zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from distmeta.algorithms.base import AdaptingRule
from distmeta.algorithms.chunk import Chunk, Sums, adaptation_metrics
from distmeta.algorithms.inner import InnerLoop, InnerStep
from distmeta.types import Params


@dataclass(frozen=True)
class PathLength:
    """The gradient of the inner path's length (``norm``) or of half its squared step lengths,
    accumulated during a loop run without a graph."""

    loss_dim: bool = True
    norm: bool = True
    stabilise: bool = True

    def segment(self, c: Chunk, before: Params, after: Params, grads: Params, d_loss: Tensor) -> Params:
        """One step's contribution Delta_i, per task."""
        if self.stabilise:
            d_loss = -d_loss.abs()
        if not self.loss_dim:
            d_loss = torch.zeros_like(d_loss)
        moved = {n: before[n] - after[n] for n in before}
        delta = {n: moved[n] - c.per_task(d_loss, grads[n]) * grads[n] for n in before}
        if self.norm:
            length = torch.sqrt(c.task_dot(moved, moved) + d_loss ** 2)
            length = torch.where(length > 0, length, torch.ones_like(length))
            delta = {n: v / c.per_task(length, v) for n, v in delta.items()}
        return delta

    def gradient(self, c: Chunk, loop: InnerLoop) -> Sums:
        total = {n: torch.zeros_like(v) for n, v in c.start.items()}
        first, fast, pending = None, c.start, None

        def add(step: InnerStep, after_loss: Tensor) -> None:
            with torch.no_grad():
                part = self.segment(c, {n: v.detach() for n, v in step.before.items()}, step.after,
                                    step.grads, after_loss.detach() - step.loss.detach())
            for n in total:
                total[n] = total[n] + part[n]

        for step in loop.path(c, second_order=False):  # one step held at a time
            first = step.loss.detach() if first is None else first
            if pending is not None:
                add(pending, step.loss)
            pending, fast = step, step.after
        if pending is not None:
            with torch.no_grad():
                add(pending, c.support(pending.after))
        moved = c.task_sum(total)
        grads = {k: moved[k] if k in moved else torch.zeros_like(v) for k, v in c.theta.items()}
        return grads, adaptation_metrics(c, fast, first)


@dataclass(frozen=True)
class Leap(AdaptingRule):
    """Leap: ``Leap(inner_lr=0.1, inner_steps=100, loss_dim=True, norm=True, stabilise=True)``."""

    loss_dim: bool = True
    norm: bool = True
    stabilise: bool = True

    config_name: ClassVar[str] = "leap"
    fuses_shards: ClassVar[bool] = True

    def outer_gradient(self, c: Chunk) -> PathLength:
        return PathLength(self.loss_dim, self.norm, self.stabilise)

"""Reptile: Nichol, Achiam, Schulman, "On First-Order Meta-Learning Algorithms", 2018.

After K steps of SGD on the support set, phi_K, the meta-gradient is theta - phi_K
(Algorithm 1: theta <- theta + epsilon (phi_K - theta), i.e. SGD with learning rate epsilon on
theta - phi_K). Parameters that do not adapt receive a zero meta-gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from distmeta.algorithms.base import AdaptingRule
from distmeta.types import LossKind, Params


@dataclass(frozen=True)
class Reptile(AdaptingRule):
    """Reptile: ``Reptile(inner_lr=0.1, inner_steps=5)``; use the outer SGD lr as epsilon."""

    def task_fn(self, model: nn.Module, params: Params, names: tuple[str, ...], kind: LossKind):
        def task(xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor):
            adapted, first = self.adapt_task(model, kind, params, names, xs, ys)
            grads = {k: params[k] - adapted[k] for k in params}
            return grads, self.adaptation_metrics(model, kind, params, adapted, (xs, ys, xq, yq), first)

        return task

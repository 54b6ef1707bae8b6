"""First-order MAML: Finn, Abbeel, Levine, ICML 2017, Section 5.2.

Treats d phi_K / d theta as the identity: the outer gradient is grad L_query evaluated at the
adapted parameters phi_K (Nichol et al. 2018, Eq. 5). No second-order terms, no graph through
the inner loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from distmeta.algorithms.base import AdaptingRule
from distmeta.algorithms.functional import query_grad
from distmeta.types import LossKind, Params


@dataclass(frozen=True)
class FOMAML(AdaptingRule):
    """First-order MAML: ``FOMAML(inner_lr=0.4, inner_steps=1)``."""

    def task_fn(self, model: nn.Module, params: Params, names: tuple[str, ...], kind: LossKind):
        def task(xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor):
            adapted, first = self.adapt_task(model, kind, params, names, xs, ys)
            grads, after = query_grad(model, kind, adapted, xq, yq)
            return grads, self.adaptation_metrics(model, kind, params, adapted, (xs, ys, xq, yq), first, after)

        return task

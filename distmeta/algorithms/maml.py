"""MAML: Finn, Abbeel, Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks", ICML 2017.

Inner loop (Eq. 1): phi_{k+1} = phi_k - alpha * grad L_support(phi_k), phi_0 = theta, K steps.
Outer gradient (Eq. 2-3): grad_theta L_query(phi_K(theta)), exact, by differentiating through
the unrolled inner loop (second order: Hessian-vector products appear in the chain rule).
With ``adapt: head`` this is ANIL (Raghu et al., ICLR 2020): only the head adapts, the body
still receives its exact outer gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torch.func import grad

from distmeta.algorithms.base import AdaptingRule
from distmeta.algorithms.functional import loss_and_acc
from distmeta.types import LossKind, Params


@dataclass(frozen=True)
class MAML(AdaptingRule):
    """Second-order MAML: ``MAML(inner_lr=0.4, inner_steps=1)``."""

    def task_fn(self, model: nn.Module, params: Params, names: tuple[str, ...], kind: LossKind):
        def task(xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor):
            def outer(theta: Params):
                adapted, first = self.adapt_task(model, kind, theta, names, xs, ys)
                loss, acc = loss_and_acc(model, kind, adapted, xq, yq)
                return loss, (adapted, first, loss, acc)

            grads, (adapted, first, loss, acc) = grad(outer, has_aux=True)(params)
            adapted = {k: v.detach() for k, v in adapted.items()}
            return grads, self.adaptation_metrics(model, kind, params, adapted, (xs, ys, xq, yq),
                                                  first.detach(), (loss.detach(), acc.detach()))

        return task

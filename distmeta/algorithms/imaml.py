"""iMAML: Rajeswaran, Finn, Kakade, Levine, "Meta-Learning with Implicit Gradients",
NeurIPS 2019.

Inner problem (Eq. 4): phi* = argmin_phi L_support(phi) + lam/2 ||phi - theta||^2, solved
approximately by ``inner_steps`` of gradient descent from theta, without a graph.
Outer gradient (Eq. 6-7): d phi*/d theta = (I + H/lam)^-1 with H the Hessian of L_support at
phi*, so g = (I + H/lam)^-1 grad L_query(phi*), solved by ``cg_steps`` of conjugate gradient
on Hessian-vector products (reverse-over-reverse, H v = grad <grad L_s, v>, which vmaps
for every model here; forward-over-reverse ``jvp`` and a reused ``vjp`` each fail under
``vmap`` for one of the MLP or Conv4 in torch 2.14). ``damping`` adds
damping/lam * I to the system for stability. Memory is that of one inner gradient plus a
Hessian-vector product, independent of ``inner_steps``.

When only some parameters adapt (``adapt: head``), the frozen ones theta_r also move phi*:
by the implicit function theorem d phi*/d theta_r = -(H + lam I)^-1 d^2 L_s / d phi d theta_r,
so their gradient is dL_q/dtheta_r - d/dtheta_r < grad_phi L_s(phi*, theta_r), x/lam > with x
the CG solution. This is exact, not a first-order approximation.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torch.func import grad

from distmeta.algorithms.base import AdaptingRule, check_positive
from distmeta.algorithms.functional import (
    conjugate_gradient,
    loss_and_acc,
    query_grad,
    split,
    tree_dot,
)
from distmeta.types import LossKind, Params


@dataclass(frozen=True)
class IMAML(AdaptingRule):
    """Implicit MAML: ``IMAML(inner_lr=0.1, inner_steps=16, lam=2.0, cg_steps=5)``."""

    lam: float = 1.0
    cg_steps: int = 5
    damping: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("algorithm(IMAML)", "lam", self.lam)
        if not isinstance(self.cg_steps, int) or self.cg_steps < 1:
            raise ValueError(f"algorithm(IMAML).cg_steps={self.cg_steps!r}: must be an integer >= 1")
        if self.damping < 0:
            raise ValueError(f"algorithm(IMAML).damping={self.damping!r}: must be >= 0")

    def inner_objective(self, model, kind, theta, frozen, x, y):
        lam = self.lam

        def objective(fast: Params) -> Tensor:
            prox = sum(((fast[k] - theta[k]) ** 2).sum() for k in fast)
            return loss_and_acc(model, kind, {**frozen, **fast}, x, y)[0] + 0.5 * lam * prox

        return objective

    def task_fn(self, model: nn.Module, params: Params, names: tuple[str, ...], kind: LossKind):
        lam, damping = self.lam, self.damping

        def task(xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor):
            def support_loss(phi: Params, rest: Params) -> Tensor:
                return loss_and_acc(model, kind, {**rest, **phi}, xs, ys)[0]

            adapted, first = self.adapt_task(model, kind, params, names, xs, ys)
            phi, rest = split(adapted, names)
            (g_phi, g_rest), after = query_grad(model, kind, phi, xq, yq, argnums=(0, 1), rest=rest)

            def matvec(v: Params) -> Params:
                hv = grad(lambda p: tree_dot(grad(support_loss)(p, rest), v))(phi)
                return {k: (1.0 + damping / lam) * v[k] + hv[k] / lam for k in v}

            x = conjugate_gradient(matvec, g_phi, self.cg_steps)
            grads = dict(x)
            if rest:
                w = {k: v / lam for k, v in x.items()}
                cross = grad(lambda r: tree_dot(grad(support_loss)(phi, r), w))(rest)
                grads |= {k: g_rest[k] - cross[k] for k in rest}
            return grads, self.adaptation_metrics(model, kind, params, adapted, (xs, ys, xq, yq), first, after)

        return task

"""iMAML: Rajeswaran, Finn, Kakade, Levine, "Meta-Learning with Implicit Gradients",
NeurIPS 2019.

Inner problem (Eq. 4): phi* = argmin_phi L_support(phi) + lam/2 ||phi - theta||^2, solved
approximately by ``inner_steps`` of gradient descent from theta, without a graph.
Outer gradient (Eq. 6-7): d phi*/d theta = (I + H/lam)^-1 with H the Hessian of L_support at
phi*, so g = (I + H/lam)^-1 grad L_query(phi*), solved by ``cg_steps`` of conjugate gradient
on Hessian-vector products (H v = grad <grad L_s, v>, double backward through one support
gradient kept on the graph, per task: see :mod:`distmeta.algorithms.engine`). ``damping`` adds
damping/lam * I to the system for stability. Memory is that of one inner gradient plus a
Hessian-vector product, independent of ``inner_steps``.

When only some parameters adapt (``adapt: head``), the frozen ones theta_r also move phi*:
by the implicit function theorem d phi*/d theta_r = -(H + lam I)^-1 d^2 L_s / d phi d theta_r,
so their gradient is dL_q/dtheta_r - d/dtheta_r < grad_phi L_s(phi*, theta_r), x/lam > with x
the CG solution. This is exact, not a first-order approximation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from distmeta.algorithms.base import AdaptingRule, check_positive
from distmeta.algorithms.chunk import Chunk, Sums, adaptation_metrics, gradients
from distmeta.algorithms.inner import InnerLoop
from distmeta.types import Params


def conjugate_gradient(c: Chunk, matvec: Callable[[Params], Params], b: Params, steps: int) -> Params:
    """Solve ``A_t x_t = b_t`` for every task's symmetric positive definite ``A_t`` by
    ``steps`` CG iterations from 0 (Hestenes and Stiefel 1952), all tasks at once.

    A fixed iteration count, and a zero residual is handled without dividing by zero.
    """
    def axpy(alpha: Tensor, x: Params, y: Params) -> Params:
        return {k: c.per_task(alpha, y[k]) * x[k] + y[k] for k in y}

    def safe_div(num: Tensor, den: Tensor) -> Tensor:
        return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))

    x = {k: torch.zeros_like(v) for k, v in b.items()}
    r, p = dict(b), dict(b)
    rr = c.task_dot(r, r)
    for _ in range(steps):
        ap = matvec(p)
        alpha = safe_div(rr, c.task_dot(p, ap))
        x = axpy(alpha, p, x)
        r = axpy(-alpha, ap, r)
        rr_new = c.task_dot(r, r)
        p = axpy(safe_div(rr_new, rr), p, r)
        rr = rr_new
    return x


@dataclass(frozen=True)
class Implicit:
    """The implicit outer gradient (Eq. 6-7) at the end of a loop run without a graph:
    (I + H/lam)^-1 grad L_query(phi) by ``cg_steps`` of CG, and the frozen parameters' share
    by the implicit function theorem."""

    lam: float
    cg_steps: int
    damping: float = 0.0

    def gradient(self, c: Chunk, loop: InnerLoop) -> Sums:
        lam, damping = self.lam, self.damping
        fast, first = loop.run(c, second_order=False)
        q_loss, q_acc = c.query(fast)
        g = gradients(q_loss.sum(), {**fast, **c.frozen})
        support_grad = gradients(c.support(fast).sum(), fast, create_graph=True)

        def matvec(v: Params) -> Params:
            hv = gradients(sum((support_grad[k] * v[k]).sum() for k in v), fast, retain_graph=True)
            return {k: (1.0 + damping / lam) * v[k] + hv[k] / lam for k in v}

        x = conjugate_gradient(c, matvec, {k: g[k] for k in fast}, self.cg_steps)
        grads = c.task_sum(x)
        if c.frozen:
            cross = gradients(sum((support_grad[k] * x[k] / lam).sum() for k in x), c.frozen)
            grads |= {k: g[k] - cross[k] for k in c.frozen}
        return grads, adaptation_metrics(c, fast, first, (q_loss, q_acc))


@dataclass(frozen=True)
class IMAML(AdaptingRule):
    """Implicit MAML: ``IMAML(inner_lr=0.1, inner_steps=16, lam=2.0, cg_steps=5)``."""

    lam: float = 1.0
    cg_steps: int = 5
    damping: float = 0.0

    config_name: ClassVar[str] = "imaml"
    fuses_shards: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("algorithm(IMAML)", "lam", self.lam)
        if not isinstance(self.cg_steps, int) or self.cg_steps < 1:
            raise ValueError(f"algorithm(IMAML).cg_steps={self.cg_steps!r}: must be an integer >= 1")
        if self.damping < 0:
            raise ValueError(f"algorithm(IMAML).damping={self.damping!r}: must be >= 0")

    def inner_objective(self, c: Chunk) -> Callable[[Params], Tensor]:
        """Support loss + lam/2 ||phi - theta||^2 per task (Eq. 4)."""
        anchor = {k: v.detach() for k, v in c.start.items()}

        def proximal(fast: Params) -> Tensor:
            moved = {k: fast[k] - anchor[k] for k in fast}
            return c.support(fast) + 0.5 * self.lam * c.task_dot(moved, moved)
        return proximal

    def outer_gradient(self, c: Chunk) -> Implicit:
        return Implicit(self.lam, self.cg_steps, self.damping)

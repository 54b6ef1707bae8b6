"""Ways to take the outer gradient, separate from the inner update: an
:class:`OuterGradient` maps a chunk and its inner loop to the chunk's meta-gradient (w.r.t.
``c.theta``, summed over tasks) and metrics.

Here the two that differentiate the query loss after the unrolled loop (Finn et al. 2017,
Eq. 2-3): :class:`SecondOrder`, through the loop (Hessian-vector products appear in the
chain rule), and :class:`FirstOrder`, at its end, d phi_K / d theta taken as the identity
(Finn et al. 2017, Section 5.2; Nichol et al. 2018, Eq. 5). Both take MAML++'s multi-step
loss (Antoniou et al. 2019, Section 4, MSL): ``weights`` w_k make the outer loss
sum_k w_k L_query(phi_{k+1}); first order, each term is differentiated at its own step's end.

The others are with their rules: through the loop with checkpointed steps
(:mod:`~distmeta.algorithms.checkpointed`), implicit by conjugate gradient
(:mod:`~distmeta.algorithms.imaml`), path length (:mod:`~distmeta.algorithms.leap`),
theta - phi_K (:mod:`~distmeta.algorithms.reptile`), no inner loop at all
(:mod:`~distmeta.algorithms.erm`). Closed-form heads (R2-D2, ProtoNets) have no inner loop
and differentiate through their solve (:mod:`~distmeta.algorithms.closed_form`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from distmeta.algorithms.chunk import Chunk, Sums, adaptation_metrics, gradients
from distmeta.algorithms.inner import InnerLoop
from distmeta.types import Params

Weights = tuple[float, ...]
"""The multi-step loss: one weight per inner step, on the query loss after that step."""

Query = tuple[Tensor, Tensor]


class OuterGradient(Protocol):
    """How a rule takes the outer gradient of chunk ``c`` after (or through) ``loop``."""

    def gradient(self, c: Chunk, loop: InnerLoop) -> Sums: ...


def unroll(c: Chunk, loop: InnerLoop, second_order: bool,
           on_query: Callable[[int, Params, Query], None] | None = None) -> tuple[Params, Tensor, Query]:
    """``(phi_K, first inner loss, query (loss, acc) at phi_K)``; with ``on_query`` the query
    after every step k is scored as the loop goes and passed on as ``(k, phi_{k+1}, query)``."""
    first, fast, query = None, c.start, None
    for step in loop.path(c, second_order):
        first = step.loss.detach() if first is None else first
        fast = step.after
        if on_query is not None:
            query = c.query(fast)
            on_query(step.k, fast, query)
    if query is None:
        query = c.query(fast)
    return fast, loop.first_loss(c, fast, first), query


def at_end(c: Chunk, fast: Params, output: Tensor) -> Params:
    """``output`` differentiated at the fast parameters (summed over tasks), as if they were
    theta, and at the frozen ones: the first-order gradient."""
    g = gradients(output, {**fast, **c.frozen})
    return c.task_sum({k: g[k] for k in fast}) | {k: g[k] for k in c.frozen}


@dataclass(frozen=True)
class SecondOrder:
    """Through the unrolled loop: grad_theta of L_query(phi_K(theta)), or with ``weights`` of
    sum_k w_k L_query(phi_{k+1}(theta))."""

    weights: Weights | None = None

    def gradient(self, c: Chunk, loop: InnerLoop) -> Sums:
        total: Tensor | None = None

        def add(k: int, fast: Params, query: Query) -> None:
            nonlocal total
            term = self.weights[k] * query[0].sum()  # type: ignore[index]
            total = term if total is None else total + term

        fast, first, query = unroll(c, loop, True, None if self.weights is None else add)
        if self.weights is None:
            total = query[0].sum()
        return gradients(total, c.theta), adaptation_metrics(c, fast, first, query)  # type: ignore[arg-type]


@dataclass(frozen=True)
class FirstOrder:
    """At the end of a loop run without a graph: grad L_query(phi_K), or with ``weights``
    sum_k w_k grad L_query(phi_{k+1}), each at its own step."""

    weights: Weights | None = None

    def gradient(self, c: Chunk, loop: InnerLoop) -> Sums:
        grads = {k: torch.zeros_like(v) for k, v in c.theta.items()}

        def add(k: int, fast: Params, query: Query) -> None:
            nonlocal grads
            part = at_end(c, fast, self.weights[k] * query[0].sum())  # type: ignore[index]
            grads = {n: grads[n] + part[n] for n in grads}

        fast, first, query = unroll(c, loop, False, None if self.weights is None else add)
        if self.weights is None:
            grads = at_end(c, fast, query[0].sum())
        return grads, adaptation_metrics(c, fast, first, query)

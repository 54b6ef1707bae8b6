"""MAML: Finn, Abbeel, Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks", ICML 2017.

Inner loop (Eq. 1): phi_{k+1} = phi_k - alpha * grad L_support(phi_k), phi_0 = theta, K steps.
Outer gradient (Eq. 2-3): grad_theta L_query(phi_K(theta)), exact, by differentiating through
the unrolled inner loop (second order: Hessian-vector products appear in the chain rule).
With ``adapt: head`` this is ANIL (Raghu et al., ICLR 2020): only the head adapts, the body
still receives its exact outer gradient. ``checkpoint_inner`` recomputes each inner step
during the backward pass, so memory stops growing with K.
"""

from __future__ import annotations

from dataclasses import dataclass

from distmeta.algorithms.checkpointed import checkpointed_unroll
from distmeta.algorithms.chunk import Chunk, adaptation_metrics
from distmeta.algorithms.engine import Sums, UnrolledRule


@dataclass(frozen=True)
class MAML(UnrolledRule):
    """Second-order MAML: ``MAML(inner_lr=0.4, inner_steps=1)``.

    ``checkpoint_inner=True`` gives the same gradient in the memory of one inner step, for
    one more forward and backward per step (:mod:`distmeta.algorithms.checkpointed`)."""

    checkpoint_inner: bool = False

    def chunk_gradient(self, c: Chunk) -> Sums:
        if not self.checkpoint_inner:
            return super().chunk_gradient(c)
        grads, fast, first, query = checkpointed_unroll(c, self.inner_steps, self.inner_lr, self.inner_objective(c))
        return grads, adaptation_metrics(c, fast, first, query)

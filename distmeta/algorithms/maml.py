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

from distmeta.algorithms.engine import UnrolledRule


@dataclass(frozen=True)
class MAML(UnrolledRule):
    """Second-order MAML: ``MAML(inner_lr=0.4, inner_steps=1)``."""

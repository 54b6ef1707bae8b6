"""MAML: Finn, Abbeel, Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks", ICML 2017; with the options of MAML++ (Antoniou, Edwards, Storkey, "How to train
your MAML", ICLR 2019).

Inner loop (Eq. 1): phi_{k+1} = phi_k - alpha * grad L_support(phi_k), phi_0 = theta, K steps.
Outer gradient (Eq. 2-3): grad_theta L_query(phi_K(theta)), exact, by differentiating through
the unrolled inner loop (second order: Hessian-vector products appear in the chain rule).
With ``adapt: head`` this is ANIL (Raghu et al., ICLR 2020): only the head adapts, the body
still receives its exact outer gradient. ``checkpoint_inner`` recomputes each inner step
during the backward pass, so memory stops growing with K.

MAML++ (Section 4) is this rule with its options: ``lslr`` (LSLR) and ``bn_per_step`` (BNWB)
change the inner update (:mod:`distmeta.algorithms.maml_plus_plus`), ``msl_steps`` (MSL) and
``first_order_steps`` (DA) the outer gradient (:mod:`distmeta.algorithms.unrolled`); the
outer-gradient options apply to Meta-SGD and Meta-KFO alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from distmeta.algorithms.maml_plus_plus import batchnorm_names, msl_weights
from distmeta.algorithms.unrolled import UnrolledRule

__all__ = ["MAML", "batchnorm_names", "msl_weights"]


@dataclass(frozen=True)
class MAML(UnrolledRule):
    """Second-order MAML: ``MAML(inner_lr=0.4, inner_steps=1)``; MAML++ with ``lslr``,
    ``msl_steps``, ``first_order_steps`` and ``bn_per_step``."""

    config_name: ClassVar[str] = "maml"

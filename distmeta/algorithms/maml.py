"""MAML: Finn, Abbeel, Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks", ICML 2017; with the options of MAML++ (Antoniou, Edwards, Storkey, "How to train
your MAML", ICLR 2019).

Inner loop (Eq. 1): phi_{k+1} = phi_k - alpha * grad L_support(phi_k), phi_0 = theta, K steps.
Outer gradient (Eq. 2-3): grad_theta L_query(phi_K(theta)), exact, by differentiating through
the unrolled inner loop (second order: Hessian-vector products appear in the chain rule).
With ``adapt: head`` this is ANIL (Raghu et al., ICLR 2020): only the head adapts, the body
still receives its exact outer gradient. ``checkpoint_inner`` recomputes each inner step
during the backward pass, so memory stops growing with K.

MAML++ (Section 4), each an option:

* ``lslr`` (LSLR): a learned inner rate per parameter tensor and per step, ``rule.lslr.<name>``
  (K values, initialised to ``inner_lr``; steps past K at test time use the last);
* ``msl_steps`` (MSL): for the first ``msl_steps`` outer steps the outer loss is the weighted
  sum of the query losses after every inner step, the weights annealed from uniform toward
  the last step (the paper's code: non-final weights fall linearly to 0.03/K); then the
  last step's loss alone;
* ``first_order_steps`` (DA): first order for the first ``first_order_steps`` outer steps,
  then second order;
* ``bn_per_step`` (BNWB): BatchNorm weights and biases per inner step, meta-learned and not
  adapted by the inner SGD: step 0 uses the model's own, step k the copy
  ``rule.bnwb.<k>.<name>`` (k = 1..K; steps past K at test time use the last).

BatchNorm here is transductive (no running statistics), so MAML++'s per-step running
statistics (BNRS) have nothing to keep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from distmeta.algorithms.checkpointed import checkpointed_unroll
from distmeta.algorithms.chunk import Chunk, adaptation_metrics, gradients, inner_path
from distmeta.algorithms.engine import Sums, UnrolledRule
from distmeta.algorithms.functional import RULE_PREFIX
from distmeta.types import Params

LSLR = RULE_PREFIX + "lslr."
BNWB = RULE_PREFIX + "bnwb."


def batchnorm_names(model: nn.Module) -> list[str]:
    """Names of the affine BatchNorm parameters of ``model``."""
    return [f"{name}.{p}" for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for p, _ in m.named_parameters(recurse=False)]


def msl_weights(steps: int, outer_step: int, anneal_steps: int) -> list[float]:
    """MAML++'s per-step loss weights at ``outer_step`` (its ``get_per_step_loss_importance_vector``,
    annealed over ``anneal_steps`` outer steps instead of epochs)."""
    weights = [1.0 / steps] * steps
    decay, floor = 1.0 / steps / anneal_steps, 0.03 / steps
    for i in range(steps - 1):
        weights[i] = max(weights[i] - outer_step * decay, floor)
    weights[-1] = min(weights[-1] + outer_step * (steps - 1) * decay, 1.0 - (steps - 1) * floor)
    return weights


@dataclass(frozen=True)
class MAML(UnrolledRule):
    """Second-order MAML: ``MAML(inner_lr=0.4, inner_steps=1)``; MAML++ with ``lslr``,
    ``msl_steps`` and ``first_order_steps``."""

    checkpoint_inner: bool = False
    lslr: bool = False
    msl_steps: int = 0
    first_order_steps: int = 0
    bn_per_step: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("msl_steps", "first_order_steps"):
            if getattr(self, key) < 0:
                raise ValueError(f"algorithm(MAML).{key}={getattr(self, key)}: must be >= 0")

    def init_params(self, model: nn.Module) -> Params:
        params = super().init_params(model)
        if self.lslr:
            params |= {LSLR + n: torch.full((self.inner_steps,), self.inner_lr, dtype=params[n].dtype)
                       for n in self.adapted(params)}
        if self.bn_per_step:
            names = [n for n in batchnorm_names(model) if n in self.adapted(params)]
            if not names:
                raise ValueError("algorithm.bn_per_step: no adapted BatchNorm parameters (the model has none, "
                                 "or algorithm.adapt leaves them out)")
            params |= {f"{BNWB}{k}.{n}": params[n].clone() for k in range(1, self.inner_steps + 1) for n in names}
        return params

    def inner_step(self, c: Chunk, fast: Params, grads: Params, k: int, state: Any) -> tuple[Params, Any]:
        if self.lslr:
            step = min(k, self.inner_steps - 1)
            after = {n: fast[n] - c.theta[LSLR + n][step] * grads[n] for n in fast}
        else:
            after, state = super().inner_step(c, fast, grads, k, state)
        if self.bn_per_step:
            copy = f"{BNWB}{min(k + 1, self.inner_steps)}."
            after |= {n: c.theta[copy + n].expand_as(fast[n]) for n in fast if copy + n in c.theta}
        return after, state

    def is_second_order(self, c: Chunk) -> bool:
        return c.step >= self.first_order_steps

    def chunk_gradient(self, c: Chunk) -> Sums:
        if c.step < self.msl_steps:
            return self.multi_step_loss(c)
        if self.checkpoint_inner and self.is_second_order(c):
            grads, fast, first, query = checkpointed_unroll(c, self, self.inner_steps, self.inner_objective(c))
            return grads, adaptation_metrics(c, fast, first, query)
        return super().chunk_gradient(c)

    def multi_step_loss(self, c: Chunk) -> Sums:
        """MSL: the weighted query losses after every inner step, differentiated through the
        loop (second order), or each at its own step's end (first order)."""
        second_order = self.is_second_order(c)
        weights = msl_weights(self.inner_steps, c.step, self.msl_steps)
        grads = {k: torch.zeros_like(v) for k, v in c.theta.items()}
        total: Tensor | None = None
        first, fast, query = None, c.start, None
        for step, w in zip(inner_path(c, self, self.inner_steps, second_order, self.inner_objective(c)), weights,
                           strict=True):
            first = step.loss.detach() if first is None else first
            fast, query = step.after, c.query(step.after)
            if second_order:
                total = w * query[0].sum() if total is None else total + w * query[0].sum()
            else:
                g = gradients(w * query[0].sum(), {**fast, **c.frozen})
                part = c.task_sum({k: g[k] for k in fast}) | {k: g[k] for k in c.frozen}
                grads = {k: grads[k] + part[k] if k in part else grads[k] for k in grads}
        if second_order:
            grads = gradients(total, c.theta)  # type: ignore[arg-type]
        return grads, adaptation_metrics(c, fast, first, query)  # type: ignore[arg-type]

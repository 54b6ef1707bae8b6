"""MAML++'s inner-update options and its multi-step loss weights: Antoniou, Edwards, Storkey,
"How to train your MAML", ICLR 2019, Section 4.

* LSLR (:class:`LSLR`): a learned inner rate per parameter tensor and per step,
  ``rule.lslr.<name>`` (K values, initialised to ``inner_lr``; steps past K at test time use
  the last): phi_{k+1} = phi_k - alpha_{k, name} grad L_support(phi_k);
* BNWB (:class:`PerStepBatchNorm`): BatchNorm weights and biases per inner step,
  meta-learned and not adapted by the inner update: step 0 uses the model's own, step k the
  copy ``rule.bnwb.<k>.<name>`` (k = 1..K; steps past K at test time use the last). It wraps
  any inner update (SGD, LSLR, Meta-SGD's rates, Meta-KFO's factors);
* MSL weights (:func:`msl_weights`): the per-step query-loss weights of the multi-step loss.

BatchNorm here is transductive (no running statistics), so MAML++'s per-step running
statistics (BNRS) have nothing to keep. The outer-gradient options (MSL, first-order
annealing, checkpointing) are in :mod:`distmeta.algorithms.unrolled`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from distmeta.algorithms.chunk import Chunk
from distmeta.algorithms.functional import RULE_PREFIX
from distmeta.algorithms.inner import InnerState, InnerUpdate
from distmeta.types import Params

LSLR_PREFIX = RULE_PREFIX + "lslr."
BNWB_PREFIX = RULE_PREFIX + "bnwb."


def batchnorm_names(model: nn.Module) -> list[str]:
    """Names of the affine BatchNorm parameters of ``model``."""
    return [f"{name}.{p}" for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for p, _ in m.named_parameters(recurse=False)]


def msl_weights(steps: int, outer_step: int, anneal_steps: int) -> list[float]:
    """MAML++'s per-step loss weights at ``outer_step`` (its ``get_per_step_loss_importance_vector``,
    annealed over ``anneal_steps`` outer steps instead of epochs): non-final weights fall
    linearly from 1/K to 0.03/K."""
    weights = [1.0 / steps] * steps
    decay, floor = 1.0 / steps / anneal_steps, 0.03 / steps
    for i in range(steps - 1):
        weights[i] = max(weights[i] - outer_step * decay, floor)
    weights[-1] = min(weights[-1] + outer_step * (steps - 1) * decay, 1.0 - (steps - 1) * floor)
    return weights


@dataclass(frozen=True)
class LSLR:
    """Learned per-layer per-step rates, initialised to ``lr`` for ``steps`` steps."""

    lr: float
    steps: int

    def init_params(self, model: nn.Module, params: Params, adapted: tuple[str, ...]) -> Params:
        return {LSLR_PREFIX + n: torch.full((self.steps,), self.lr, dtype=params[n].dtype) for n in adapted}

    def init(self, c: Chunk) -> InnerState:
        return InnerState()

    def update(self, c: Chunk, fast: Params, grads: Params, state: InnerState) -> tuple[Params, InnerState]:
        step = min(state.k, self.steps - 1)
        return {n: fast[n] - c.theta[LSLR_PREFIX + n][step] * grads[n] for n in fast}, state.next()


@dataclass(frozen=True)
class PerStepBatchNorm:
    """``inner``, with the adapted BatchNorm parameters after step k set to the meta-learned
    copy of step k + 1 (of ``steps``; later steps use the last)."""

    inner: InnerUpdate
    steps: int

    def init_params(self, model: nn.Module, params: Params, adapted: tuple[str, ...]) -> Params:
        own = self.inner.init_params(model, params, adapted)
        names = [n for n in batchnorm_names(model) if n in adapted]
        if not names:
            raise ValueError("algorithm.bn_per_step: no adapted BatchNorm parameters (the model has none, "
                             "or algorithm.adapt leaves them out)")
        return own | {f"{BNWB_PREFIX}{k}.{n}": params[n].clone() for k in range(1, self.steps + 1) for n in names}

    def init(self, c: Chunk) -> InnerState:
        return self.inner.init(c)

    def update(self, c: Chunk, fast: Params, grads: Params, state: InnerState) -> tuple[Params, InnerState]:
        after, next_state = self.inner.update(c, fast, grads, state)
        copy = f"{BNWB_PREFIX}{min(state.k + 1, self.steps)}."
        after |= {n: c.theta[copy + n].expand_as(fast[n]) for n in fast if copy + n in c.theta}
        return after, next_state

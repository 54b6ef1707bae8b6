"""Meta-SGD: Li, Zhou, Chen, Li, "Meta-SGD: Learning to Learn Quickly for Few-Shot
Learning", 2017.

The inner step is phi = theta - alpha (.) grad L_support(theta) (Eq. 3), with alpha a learned
vector of the shape of theta: one rate per parameter, initialised to ``inner_lr`` and
meta-learned with theta by differentiating through the inner loop (second order, as MAML).
The rates are meta-parameters held beside the model's, as ``rule.lr.<name>``. The
outer-gradient options of MAML++ (``checkpoint_inner``, ``msl_steps``, ``first_order_steps``)
and its per-step BatchNorm weights (``bn_per_step``) apply as for MAML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from distmeta.algorithms.chunk import Chunk
from distmeta.algorithms.functional import RULE_PREFIX
from distmeta.algorithms.inner import InnerState, InnerUpdate
from distmeta.algorithms.unrolled import UnrolledRule
from distmeta.types import Params

LR = RULE_PREFIX + "lr."


@dataclass(frozen=True)
class PerParameterRates:
    """``fast - alpha (.) grads``, alpha (``rule.lr.<name>``) initialised to ``lr``."""

    lr: float

    def init_params(self, model: nn.Module, params: Params, adapted: tuple[str, ...]) -> Params:
        return {LR + n: torch.full_like(params[n], self.lr) for n in adapted}

    def init(self, c: Chunk) -> InnerState:
        return InnerState()

    def update(self, c: Chunk, fast: Params, grads: Params, state: InnerState) -> tuple[Params, InnerState]:
        return {n: fast[n] - c.theta[LR + n] * grads[n] for n in fast}, state.next()


@dataclass(frozen=True)
class MetaSGD(UnrolledRule):
    """Per-parameter learned inner rates: ``MetaSGD(inner_lr=0.4, inner_steps=1)``."""

    config_name: ClassVar[str] = "metasgd"
    learns_update: ClassVar[str] = "Meta-SGD (algorithm.name=metasgd) learns its own rates"

    def base_update(self) -> InnerUpdate:
        return PerParameterRates(self.inner_lr)

"""Meta-SGD: Li, Zhou, Chen, Li, "Meta-SGD: Learning to Learn Quickly for Few-Shot
Learning", 2017.

The inner step is phi = theta - alpha (.) grad L_support(theta) (Eq. 3), with alpha a learned
vector of the shape of theta: one rate per parameter, initialised to ``inner_lr`` and
meta-learned with theta by differentiating through the inner loop (second order, as MAML).
The rates are meta-parameters held beside the model's, as ``rule.lr.<name>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from distmeta.algorithms.chunk import Chunk
from distmeta.algorithms.engine import UnrolledRule
from distmeta.algorithms.functional import RULE_PREFIX
from distmeta.types import Params

LR = RULE_PREFIX + "lr."


@dataclass(frozen=True)
class MetaSGD(UnrolledRule):
    """Per-parameter learned inner rates: ``MetaSGD(inner_lr=0.4, inner_steps=1)``."""

    def init_params(self, model: nn.Module) -> Params:
        params = super().init_params(model)
        return params | {LR + n: torch.full_like(params[n], self.inner_lr) for n in self.adapted(params)}

    def inner_step(self, c: Chunk, fast: Params, grads: Params, k: int, state: Any) -> tuple[Params, Any]:
        return {n: fast[n] - c.theta[LR + n] * grads[n] for n in fast}, state

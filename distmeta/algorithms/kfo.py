"""Meta-KFO: Arnold, Iqbal, Sha, "When MAML Can Adapt Fast and How to Assist When It
Cannot", AISTATS 2021.

A learned meta-optimiser transforms the inner gradient of each adapted weight with two
Kronecker factors: W <- W - alpha * L grad_W R, i.e. (R^T (x) L) vec grad_W, with L (n x n)
and R (m x m) meta-learned through the inner loop (second order). Shapes follow the
paper's code (learn2learn's ``KroneckerTransform``): a linear weight is n = out x m = in; a
bias is n x 1; a convolution's gradient (out, in, kh, kw) is transformed per output channel
as an (in x kh*kw) matrix (n = in-channels, m = kh*kw). L and R start at the identity, where
Meta-KFO is MAML. With ``adapt: head`` only the head's gradient is transformed (ANIL-KFO).
The factors are meta-parameters ``rule.kfo.L.<name>`` and ``rule.kfo.R.<name>``. The
outer-gradient options of MAML++ (``checkpoint_inner``, ``msl_steps``, ``first_order_steps``)
and its per-step BatchNorm weights (``bn_per_step``) apply as for MAML; LSLR does not (L
already scales each tensor's step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from distmeta.algorithms.chunk import Chunk
from distmeta.algorithms.functional import RULE_PREFIX
from distmeta.algorithms.inner import InnerState, InnerUpdate
from distmeta.algorithms.unrolled import UnrolledRule
from distmeta.types import Params

L, R = RULE_PREFIX + "kfo.L.", RULE_PREFIX + "kfo.R."


def factor_sizes(shape: torch.Size) -> tuple[int, int]:
    """(n, m) of the matrix a gradient of ``shape`` is viewed as."""
    if len(shape) == 1:
        return shape[0], 1
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 4:
        return shape[1], shape[2] * shape[3]
    raise ValueError(f"Meta-KFO: no Kronecker factorisation for a parameter of shape {tuple(shape)}")


def transform(grad: Tensor, left: Tensor, right: Tensor, shape: torch.Size) -> Tensor:
    """L grad R on the matrix view of ``grad`` (any leading task dimension)."""
    lead = grad.shape[:grad.dim() - len(shape)]
    n, m = factor_sizes(shape)
    if len(shape) == 4:
        view = grad.reshape(*lead, shape[0], n, m)
    else:
        view = grad.reshape(*lead, n, m)
    return (left @ view @ right).reshape(grad.shape)


@dataclass(frozen=True)
class Kronecker:
    """``fast - lr * L grad R`` per adapted tensor, L and R (``rule.kfo.L/R.<name>``) from
    the identity."""

    lr: float

    def init_params(self, model: nn.Module, params: Params, adapted: tuple[str, ...]) -> Params:
        own: Params = {}
        for name in adapted:
            n, m = factor_sizes(params[name].shape)
            own[L + name] = torch.eye(n, dtype=params[name].dtype, device=params[name].device)
            own[R + name] = torch.eye(m, dtype=params[name].dtype, device=params[name].device)
        return own

    def init(self, c: Chunk) -> InnerState:
        return InnerState()

    def update(self, c: Chunk, fast: Params, grads: Params, state: InnerState) -> tuple[Params, InnerState]:
        shapes = {n: c.theta[n].shape for n in fast}
        return {n: fast[n] - self.lr * transform(grads[n], c.theta[L + n], c.theta[R + n], shapes[n])
                for n in fast}, state.next()


@dataclass(frozen=True)
class KFO(UnrolledRule):
    """Kronecker-factored learned inner optimiser: ``KFO(inner_lr=0.1, inner_steps=1)``."""

    config_name: ClassVar[str] = "kfo"
    learns_update: ClassVar[str] = ("Meta-KFO (algorithm.name=kfo) learns its own preconditioner "
                                    "(its factor L already scales each tensor's step)")

    def base_update(self) -> InnerUpdate:
        return Kronecker(self.inner_lr)

"""R2-D2: Bertinetto, Henriques, Torr, Vedaldi, "Meta-learning with differentiable
closed-form solvers", ICLR 2019.

The head is not learned by gradient steps but solved in closed form by ridge regression on
the body's support features Phi (S x p) and targets Y (one-hot for classification):
W = (Phi^T Phi + lam I)^-1 Phi^T Y  (Eq. 4), or with the Woodbury identity
W = Phi^T (Phi Phi^T + lam I)^-1 Y  (Eq. 5) when S < p, which costs an S x S solve.
Query predictions are alpha * Phi_q W (Section 3.2: a learned scale calibrates the regression
outputs as logits; the paper's scalar offset is left out, as softmax ignores it); the query loss is differentiated through the
solve to the body. lam is fixed, or learned as log lam.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from distmeta.algorithms.base import check_positive, model_params
from distmeta.algorithms.chunk import Chunk
from distmeta.algorithms.closed_form import HeadRule, n_out
from distmeta.algorithms.functional import RULE_PREFIX
from distmeta.losses import one_hot_targets
from distmeta.types import Params

LOG_LAM = RULE_PREFIX + "log_lam"
SCALE = RULE_PREFIX + "scale"


def ridge_head(phi: Tensor, targets: Tensor, lam: Tensor | float) -> Tensor:
    """Closed-form ridge weights ``[..., p, out]`` (any leading task dimensions); the Woodbury
    form when there are fewer points than features. Solved in float32 (or float64) with
    autocast off: CUDA has no bf16 solve, and CUDA's autocast would hand it bf16 products."""
    device = phi.device.type
    with torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device) else nullcontext():
        dtype = torch.promote_types(phi.dtype, torch.float32)
        return _ridge(phi.to(dtype), targets.to(dtype), lam)


def _ridge(phi: Tensor, targets: Tensor, lam: Tensor | float) -> Tensor:
    n, p = phi.shape[-2:]
    t = phi.transpose(-1, -2)
    if n < p:
        gram = phi @ t + lam * torch.eye(n, dtype=phi.dtype, device=phi.device)
        return t @ torch.linalg.solve(gram, targets)
    gram = t @ phi + lam * torch.eye(p, dtype=phi.dtype, device=phi.device)
    return torch.linalg.solve(gram, t @ targets)


@dataclass(frozen=True)
class R2D2(HeadRule):
    """Closed-form ridge head: ``R2D2(lam=1.0, learn_lam=True)``."""

    config_name: ClassVar[str] = "r2d2"

    lam: float = 1.0
    learn_lam: bool = False
    learn_scale: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("algorithm(R2D2)", "lam", self.lam)

    def init_params(self, model: nn.Module) -> Params:
        params = model_params(model)
        like = next(iter(params.values()))
        if self.learn_lam:
            params[LOG_LAM] = torch.tensor(math.log(self.lam), dtype=like.dtype, device=like.device)
        if self.learn_scale:
            params[SCALE] = torch.tensor(1.0, dtype=like.dtype, device=like.device)
        return params

    def logits(self, c: Chunk, phi_s: Tensor, phi_q: Tensor) -> Tensor:
        lam = torch.exp(c.theta[LOG_LAM]) if LOG_LAM in c.theta else self.lam
        targets = torch.stack([one_hot_targets(c.kind, y, n_out(c), phi_s.dtype) for y in c.batch.support_y])
        pred = phi_q @ ridge_head(phi_s, targets, lam)
        return c.theta[SCALE] * pred if SCALE in c.theta else pred

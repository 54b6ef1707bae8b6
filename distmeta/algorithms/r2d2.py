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
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad

from distmeta.algorithms.base import Evaluation, check_positive, evaluation_from_sums, model_params
from distmeta.algorithms.functional import RULE_PREFIX, run_per_task
from distmeta.losses import is_classification, one_hot_targets, task_loss
from distmeta.types import EpisodeBatch, LossKind, MetaGradient, Params

LOG_LAM = RULE_PREFIX + "log_lam"
SCALE = RULE_PREFIX + "scale"
BODY = "body."


def ridge_head(phi: Tensor, targets: Tensor, lam: Tensor | float) -> Tensor:
    """Closed-form ridge weights ``[p, out]``; Woodbury form when there are fewer points than features."""
    n, p = phi.shape
    if n < p:
        gram = phi @ phi.T + lam * torch.eye(n, dtype=phi.dtype, device=phi.device)
        return phi.T @ torch.linalg.solve(gram, targets)
    gram = phi.T @ phi + lam * torch.eye(p, dtype=phi.dtype, device=phi.device)
    return torch.linalg.solve(gram, phi.T @ targets)


@dataclass(frozen=True)
class R2D2:
    """Closed-form ridge head: ``R2D2(lam=1.0, learn_lam=True)``."""

    lam: float = 1.0
    learn_lam: bool = False
    learn_scale: bool = True
    vectorize: bool = True
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        check_positive("algorithm(R2D2)", "lam", self.lam)

    def init_params(self, model: nn.Module) -> Params:
        params = model_params(model)
        dtype = next(iter(params.values())).dtype
        if self.learn_lam:
            params[LOG_LAM] = torch.tensor(math.log(self.lam), dtype=dtype)
        if self.learn_scale:
            params[SCALE] = torch.tensor(1.0, dtype=dtype)
        return params

    @staticmethod
    def n_out(model: nn.Module, batch: EpisodeBatch) -> int:
        """Ridge targets per example: the episode's classes (the way of this batch, which may
        differ between meta-training and meta-test), else the model's outputs."""
        if batch.loss == "cross_entropy":
            return int(batch.support_y.max()) + 1
        return model.out_features

    def _query_loss(self, model: nn.Module, kind: LossKind, p: Params, xs, ys, xq, yq, n_out: int):
        body = {k[len(BODY):]: v for k, v in p.items() if k.startswith(BODY)}
        phi_s = functional_call(model.body, body, (xs,))
        phi_q = functional_call(model.body, body, (xq,))
        lam = torch.exp(p[LOG_LAM]) if LOG_LAM in p else self.lam
        w = ridge_head(phi_s, one_hot_targets(kind, ys, n_out, phi_s.dtype), lam)
        pred = phi_q @ w
        if SCALE in p:
            pred = p[SCALE] * pred
        return task_loss(kind, pred, yq)

    def meta_gradient(self, model: nn.Module, params: Params, batch: EpisodeBatch) -> MetaGradient:
        params = {k: v.detach() for k, v in params.items()}
        kind: LossKind = batch.loss  # type: ignore[assignment]
        n_out = self.n_out(model, batch)

        def task(xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor):
            def objective(p: Params):
                loss, acc = self._query_loss(model, kind, p, xs, ys, xq, yq, n_out)
                return loss, {"query_loss": loss.detach(), "query_acc": acc.detach()}

            grads, metrics = grad(objective, has_aux=True)(params)
            if not is_classification(kind):
                del metrics["query_acc"]
            return grads, metrics

        grads, metrics = run_per_task(task, batch, self.vectorize, self.chunk_size)
        return MetaGradient(grads, batch.n_tasks, {k: float(v) for k, v in metrics.items()})

    def evaluate(self, model: nn.Module, params: Params, batch: EpisodeBatch,
                 steps: int | None = None) -> Evaluation:
        """Query loss/accuracy of the closed-form head (``steps`` does not apply: one solve)."""
        kind: LossKind = batch.loss  # type: ignore[assignment]
        n_out = self.n_out(model, batch)

        def task(xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor):
            loss, acc = self._query_loss(model, kind, params, xs, ys, xq, yq, n_out)
            loss, acc = loss.detach()[None], acc.detach()[None]
            return {"loss": loss, "acc": acc, "loss_sq": loss ** 2, "acc_sq": acc ** 2}, {}

        with torch.no_grad():
            out, _ = run_per_task(task, batch, self.vectorize, self.chunk_size)
        return evaluation_from_sums(out, batch.n_tasks)

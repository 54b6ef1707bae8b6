"""Rules whose head is not learned by gradient steps but computed in closed form from the
support set's body features, on the same chunked engine: R2-D2's ridge regression
(:mod:`distmeta.algorithms.r2d2`) and ProtoNets' class prototypes
(:mod:`distmeta.algorithms.protonet`). The query loss is differentiated through the head to
the body (and to the rule's own meta-parameters, such as a learned ridge lambda or scale):
there is no inner loop, so no inner update, and the outer gradient is through the solve.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import vmap

from distmeta.algorithms.base import Evaluation, Rule, score_sums
from distmeta.algorithms.chunk import Chunk, Sums, gradients
from distmeta.algorithms.engine import concat
from distmeta.losses import is_classification, task_loss
from distmeta.types import EpisodeBatch, Params


def n_out(c: Chunk) -> int:
    """Head outputs: the episode's classes for classification (the way of this batch, which
    may differ between meta-training and meta-test), else the model's outputs."""
    if is_classification(c.kind):
        return c.batch.classes if c.batch.classes is not None else int(c.batch.support_y.max()) + 1
    return c.model.out_features


@dataclass(frozen=True, kw_only=True)
class HeadRule(Rule):
    """A closed-form head on the body's features: subclasses give :meth:`logits`."""

    def logits(self, c: Chunk, phi_s: Tensor, phi_q: Tensor) -> Tensor:
        """Query predictions ``[T, Q, out]`` from support and query features ``[T, N, F]``."""
        raise NotImplementedError

    def query_losses(self, c: Chunk) -> tuple[Tensor, Tensor]:
        pred = self.logits(c, c.features(c.batch.support_x), c.features(c.batch.query_x))
        return vmap(lambda p, y: task_loss(c.kind, p, y))(pred, c.batch.query_y)

    def chunk_gradient(self, c: Chunk) -> Sums:
        loss, acc = self.query_losses(c)
        metrics = {"query_loss": loss.detach().sum()} if c.report else {}
        if c.report and is_classification(c.kind):
            metrics["query_acc"] = acc.detach().sum()
        return gradients(loss.sum(), c.theta), metrics

    def predict(self, model: nn.Module, params: Params, batch: EpisodeBatch, steps: int | None = None) -> Tensor:
        """Query predictions ``[T, Q, out]`` of the closed-form head (``steps`` does not apply)."""
        def one(c: Chunk) -> Tensor:
            with torch.no_grad():
                return self.logits(c, c.features(c.batch.support_x), c.features(c.batch.query_x))

        return self.over_chunks(model, params, batch, one, combine=concat)

    def evaluate(self, model: nn.Module, params: Params, batch: EpisodeBatch,
                 steps: int | None = None) -> Evaluation:
        """Query loss/accuracy of the closed-form head (``steps`` does not apply: one solve)."""
        def one(c: Chunk) -> dict[str, Tensor]:
            with torch.no_grad():
                loss, acc = self.query_losses(c)
            return score_sums(loss[:, None], acc[:, None])

        return Evaluation.from_sums(self.over_chunks(model, params, batch, one), batch.n_tasks)

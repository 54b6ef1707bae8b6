"""Rules whose head is not learned by gradient steps but computed in closed form from the
support set's body features, on the same chunked engine: R2-D2's ridge regression
(:mod:`distmeta.algorithms.r2d2`) and ProtoNets' class prototypes
(:mod:`distmeta.algorithms.protonet`). The query loss is differentiated through the head to
the body (and to the rule's own meta-parameters, such as a learned ridge lambda or scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import vmap

from distmeta.algorithms.base import Evaluation, Rule, Sums, evaluation_from_sums
from distmeta.algorithms.chunk import Chunk, gradients, slices
from distmeta.losses import is_classification, task_loss
from distmeta.types import EpisodeBatch, Params


def n_out(c: Chunk) -> int:
    """Head outputs: the episode's classes for classification (the way of this batch, which
    may differ between meta-training and meta-test), else the model's outputs."""
    if is_classification(c.kind):
        return int(c.batch.support_y.max()) + 1
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
        metrics = {"query_loss": loss.detach().sum()}
        if is_classification(c.kind):
            metrics["query_acc"] = acc.detach().sum()
        return gradients(loss.sum(), c.theta), metrics

    def predict(self, model: nn.Module, params: Params, batch: EpisodeBatch, steps: int | None = None) -> Tensor:
        """Query predictions ``[T, Q, out]`` of the closed-form head (``steps`` does not apply)."""
        outs = []
        for part in slices(batch, self.vectorize, self.chunk_size):
            c = Chunk.make(model, params, (), part, self.vectorize)
            with torch.no_grad():
                outs.append(self.logits(c, c.features(part.support_x), c.features(part.query_x)))
        return torch.cat(outs)

    def evaluate(self, model: nn.Module, params: Params, batch: EpisodeBatch,
                 steps: int | None = None) -> Evaluation:
        """Query loss/accuracy of the closed-form head (``steps`` does not apply: one solve)."""
        total: dict[str, Tensor] | None = None
        for part in slices(batch, self.vectorize, self.chunk_size):
            with torch.no_grad():
                loss, acc = self.query_losses(Chunk.make(model, params, (), part, self.vectorize))
            sums = {"loss": loss.sum()[None], "acc": acc.sum()[None], "loss_sq": (loss ** 2).sum()[None],
                    "acc_sq": (acc ** 2).sum()[None]}
            total = sums if total is None else {k: total[k] + sums[k] for k in sums}
        if total is None:
            raise ValueError("EpisodeBatch holds no tasks")
        return evaluation_from_sums(total, batch.n_tasks)

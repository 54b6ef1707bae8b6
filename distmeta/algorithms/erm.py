"""ERM, the multi-task baseline ("pretrain on all tasks, then fine-tune").

No adaptation in training: the meta-gradient is grad_theta of the loss on the task's support
and query points together, at theta. MAML paper (Finn et al. 2017, Section 5.1) compares
against it as "pretrained on all tasks"; Collins et al. (ICML 2022) show it fails to learn
the shared representation that MAML/ANIL recover. ``inner_lr``/``inner_steps`` are used only
by :meth:`evaluate`, for fine-tuning at test time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from distmeta.algorithms.base import AdaptingRule
from distmeta.algorithms.chunk import Chunk, Sums, gradients
from distmeta.algorithms.inner import InnerLoop
from distmeta.losses import is_classification


@dataclass(frozen=True)
class JointLoss:
    """No inner loop: the gradient at theta of the loss on support and query points together."""

    def gradient(self, c: Chunk, loop: InnerLoop) -> Sums:
        b = c.batch
        x, y = torch.cat([b.support_x, b.query_x], 1), torch.cat([b.support_y, b.query_y], 1)
        grads = gradients(c.losses(c.start, x, y)[0].sum(), c.theta)
        if not c.report:
            return grads, {}
        with torch.no_grad():
            q_loss, q_acc = c.query(c.start)
            metrics = {"query_loss": q_loss.sum(), "query_loss_before": q_loss.sum(),
                       "support_loss_before": c.support(c.start).sum()}
            if is_classification(c.kind):
                metrics |= {"query_acc": q_acc.sum(), "query_acc_before": q_acc.sum()}
        return grads, metrics


@dataclass(frozen=True)
class ERM(AdaptingRule):
    """Multi-task ERM: ``ERM()``; fine-tunes with ``inner_lr`` for ``inner_steps`` at evaluation."""

    inner_steps: int = 0
    min_inner_steps: ClassVar[int] = 0
    config_name: ClassVar[str] = "erm"

    def outer_gradient(self, c: Chunk) -> JointLoss:
        return JointLoss()

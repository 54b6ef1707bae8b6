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
from torch import Tensor, nn
from torch.func import grad

from distmeta.algorithms.base import AdaptingRule
from distmeta.algorithms.functional import loss_and_acc
from distmeta.losses import is_classification
from distmeta.types import LossKind, Params


@dataclass(frozen=True)
class ERM(AdaptingRule):
    """Multi-task ERM: ``ERM()``; fine-tunes with ``inner_lr`` for ``inner_steps`` at evaluation."""

    inner_steps: int = 0
    min_inner_steps: ClassVar[int] = 0

    def task_fn(self, model: nn.Module, params: Params, names: tuple[str, ...], kind: LossKind):
        def task(xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor):
            x, y = torch.cat([xs, xq]), torch.cat([ys, yq])
            grads = grad(lambda p: loss_and_acc(model, kind, p, x, y)[0])(params)
            q_loss, q_acc = loss_and_acc(model, kind, params, xq, yq)
            metrics = {"query_loss": q_loss, "query_loss_before": q_loss,
                       "support_loss_before": loss_and_acc(model, kind, params, xs, ys)[0]}
            if is_classification(kind):
                metrics |= {"query_acc": q_acc, "query_acc_before": q_acc}
            return grads, {k: v.detach() for k, v in metrics.items()}

        return task

"""Task losses. The loss belongs to the task family (``EpisodeBatch.loss``), not to the rule.

A loss is named (``mse``, ``cross_entropy``) or given by import path (``mypkg.losses:huber``,
:mod:`distmeta.plugins`): a function of one task's ``(prediction, target)`` returning the mean
loss over its points, or ``(loss, accuracy)``. A classification loss (integer class labels:
accuracy is reported, ridge heads solve for one-hot targets) says so with a ``classification
= True`` attribute. Losses work unbatched, so they compose with ``torch.func.vmap``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from distmeta import plugins
from distmeta.types import LossKind


def mse(prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Mean squared error over the task's points (regression: accuracy 0)."""
    return F.mse_loss(prediction, target.reshape(prediction.shape)), prediction.new_zeros(())


def cross_entropy(prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy of ``[n, classes]`` logits against ``[n]`` labels, and the accuracy."""
    loss = F.cross_entropy(prediction, target)
    acc = (prediction.argmax(dim=-1) == target).to(prediction.dtype).mean()
    return loss, acc


cross_entropy.classification = True  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=64)
def loss_function(kind: LossKind) -> Callable[[Tensor, Tensor], Tensor | tuple[Tensor, Tensor]]:
    """The function a loss name or import path stands for."""
    return plugins.resolve("loss", kind)


def task_loss(kind: LossKind, prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Mean loss over one task's points and its accuracy (0 where the loss gives none).

    ``prediction`` is ``[n, out]`` (or ``[n, classes]`` logits); ``target`` is ``[n, out]``
    or ``[n]`` class labels.
    """
    out = loss_function(kind)(prediction, target)
    if isinstance(out, tuple):
        return out[0], out[1]
    return out, prediction.new_zeros(())


def batched_task_loss(kind: LossKind, prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`task_loss` of T tasks at once: ``prediction`` ``[T, n, ...]``, ``target``
    ``[T, n, ...]``; per-task losses and accuracies ``[T]``. The built-in losses run batched,
    a user's loss under ``vmap``."""
    if kind == "mse":
        err = F.mse_loss(prediction, target.reshape(prediction.shape), reduction="none")
        return err.flatten(1).mean(1), prediction.new_zeros(prediction.shape[0])
    if kind == "cross_entropy":
        t, n = target.shape
        loss = F.cross_entropy(prediction.reshape(t * n, -1), target.reshape(-1), reduction="none")
        acc = (prediction.argmax(dim=-1) == target).to(prediction.dtype)
        return loss.reshape(t, n).mean(1), acc.mean(1)
    return torch.vmap(lambda p, y: task_loss(kind, p, y))(prediction, target)


def is_classification(kind: LossKind) -> bool:
    return bool(getattr(loss_function(kind), "classification", False))


def one_hot_targets(kind: LossKind, target: Tensor, n_out: int, dtype: torch.dtype) -> Tensor:
    """Regression targets as ``[n, out]``; class labels as one-hot ``[n, classes]`` (for ridge heads)."""
    if is_classification(kind):
        classes = torch.arange(n_out, device=target.device)
        return (target[:, None] == classes).to(dtype)  # vmap-safe one-hot
    return target.reshape(target.shape[0], -1).to(dtype)

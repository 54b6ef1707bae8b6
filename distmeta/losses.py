"""Task losses. The loss belongs to the task family (``EpisodeBatch.loss``), not to the rule."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distmeta.types import LossKind


def task_loss(kind: LossKind, prediction: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Mean loss over one task's points and its accuracy (0 for regression).

    ``prediction`` is ``[n, out]`` (or ``[n, classes]`` logits); ``target`` is ``[n, out]``
    or ``[n]`` class labels. Works unbatched, so it composes with ``torch.func.vmap``.
    """
    if kind == "mse":
        return F.mse_loss(prediction, target.reshape(prediction.shape)), prediction.new_zeros(())
    if kind == "cross_entropy":
        loss = F.cross_entropy(prediction, target)
        acc = (prediction.argmax(dim=-1) == target).to(prediction.dtype).mean()
        return loss, acc
    raise ValueError(f"unknown loss {kind!r}: expected 'mse' or 'cross_entropy'")


def is_classification(kind: LossKind) -> bool:
    return kind == "cross_entropy"


def one_hot_targets(kind: LossKind, target: Tensor, n_out: int, dtype: torch.dtype) -> Tensor:
    """Regression targets as ``[n, out]``; class labels as one-hot ``[n, classes]`` (for ridge heads)."""
    if kind == "cross_entropy":
        classes = torch.arange(n_out, device=target.device)
        return (target[:, None] == classes).to(dtype)  # vmap-safe one-hot
    return target.reshape(target.shape[0], -1).to(dtype)

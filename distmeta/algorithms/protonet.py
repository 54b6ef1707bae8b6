"""Prototypical Networks: Snell, Swersky, Zemel, "Prototypical Networks for Few-shot
Learning", NeurIPS 2017.

Each class's prototype is the mean of its support embeddings, c_k = mean_{i: y_i = k} f(x_i)
(Eq. 1); a query's logits are the negative squared Euclidean distances to the prototypes,
-||f(x) - c_k||^2 (Eq. 2). Nothing adapts: the body is meta-learned through the prototypes.
Classification only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from distmeta.algorithms.chunk import Chunk
from distmeta.algorithms.closed_form import HeadRule, n_out
from distmeta.losses import is_classification


@dataclass(frozen=True)
class ProtoNet(HeadRule):
    """Class prototypes as a closed-form head: ``ProtoNet()``."""

    config_name: ClassVar[str] = "protonet"
    classifies_only: ClassVar[bool] = True

    def logits(self, c: Chunk, phi_s: Tensor, phi_q: Tensor) -> Tensor:
        if not is_classification(c.kind):
            raise ValueError(f"algorithm.name=protonet needs a classification task, not loss {c.kind!r}")
        prototypes = class_prototypes(c, phi_s)
        return -((phi_q[:, :, None] - prototypes[:, None]) ** 2).sum(-1)


def class_prototypes(c: Chunk, phi_s: Tensor) -> Tensor:
    """Each task's class prototypes ``[T, way, F]``: the mean support embedding per class
    (Eq. 1), from the support features ``phi_s`` ``[T, S, F]``."""
    ways = torch.arange(n_out(c), device=phi_s.device)
    members = (c.batch.support_y[..., None] == ways).to(phi_s.dtype)  # [T, S, way]
    return members.transpose(-1, -2) @ phi_s / members.sum(1)[..., None]

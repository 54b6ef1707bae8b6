"""Proto-MAML and fo-Proto-MAML: Triantafillou et al., "Meta-Dataset: A Dataset of Datasets
for Learning to Learn from Few Examples", ICLR 2020, Section 4 (fo-Proto-MAML: the paper's
best average rank among its baselines).

MAML whose linear head is not meta-learned but initialised per task from the class prototypes
of the support set (Snell et al. 2017, Eq. 1: c_k = mean_{i: y_i = k} f_theta(x_i)): the
squared Euclidean distance -||f(x) - c_k||^2 = 2 c_k . f(x) - ||c_k||^2 - ||f(x)||^2 is,
up to the term common to all classes, the linear layer

    W_k = 2 c_k,    b_k = -||c_k||^2,

so the head's size is the episode's way (variable-way episodes need no maximum). The inner
loop then adapts (``adapt``: every parameter by default) from that initialisation, the head
and the body as parameters of their own (the inner gradient is the partial derivative in
each), and the outer gradient reaches theta through the body and through the prototypes:

* ``proto_maml``: second order, through the unrolled loop and the prototype initialisation;
* ``fo_proto_maml``: first order (the paper's): d phi_K / d phi_0 taken as the identity, the
  head's share chained into theta through W(theta), b(theta) (the prototypes keep their graph).

The model's own head parameters are not used (they get no gradient).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor
from torch.func import functional_call, vmap

from distmeta.algorithms.chunk import BODY, Chunk, Sums, adaptation_metrics, gradients
from distmeta.algorithms.inner import InnerLoop
from distmeta.algorithms.outer import unroll
from distmeta.algorithms.protonet import class_prototypes
from distmeta.algorithms.unrolled import UnrolledRule
from distmeta.losses import is_classification
from distmeta.models.base import head_prefix
from distmeta.types import Params


def prototype_head(c: Chunk, head: str) -> Params:
    """``{head.weight: 2 c_k, head.bias: -||c_k||^2}`` of each task, from the support set's
    body features at the chunk's starting parameters (on the graph to theta)."""
    if not is_classification(c.kind):
        raise ValueError(f"algorithm.name=proto_maml needs a classification task, not loss {c.kind!r}")
    start = {k[len(BODY):]: v for k, v in c.start.items() if k.startswith(BODY)}
    shared = {k[len(BODY):]: v for k, v in c.frozen.items() if k.startswith(BODY)}
    if not start and not shared:
        raise ValueError("proto_maml: the model needs a body (model.body) whose parameters are named body.*")

    def one(p: Params, xi: Tensor) -> Tensor:
        return functional_call(c.model.body, {**shared, **p}, (xi,))

    x = c.batch.support_x
    phi = vmap(one, randomness="different")(start, x) if c.batched else one(start, x[0]).unsqueeze(0)
    prototypes = class_prototypes(c, phi)  # [T, way, F]
    weight, bias = 2 * prototypes, -(prototypes ** 2).sum(-1)
    if not c.batched:
        weight, bias = weight[0], bias[0]
    return {f"{head}weight": weight, f"{head}bias": bias}


@dataclass(frozen=True)
class ProtoHeadFirstOrder:
    """fo-Proto-MAML's outer gradient: first order at the loop's end; the head's gradient
    there goes on into theta through the prototype initialisation ``init``."""

    init: Params

    def gradient(self, c: Chunk, loop: InnerLoop) -> Sums:
        fast, first, query = unroll(c, loop, False)
        g = gradients(query[0].sum(), {**fast, **c.frozen})
        grads = c.task_sum({k: g[k] for k in fast if k not in self.init}) | {k: g[k] for k in c.frozen}
        surrogate = sum((g[k].detach() * v).sum() for k, v in self.init.items())
        through = gradients(surrogate, c.theta)  # type: ignore[arg-type]
        return ({k: grads[k] + through[k] if k in grads else through[k] for k in c.theta},
                adaptation_metrics(c, fast, first, query))


@dataclass(frozen=True)
class ProtoMAML(UnrolledRule):
    """Proto-MAML (second order): ``ProtoMAML(inner_lr=0.05, inner_steps=6)``."""

    config_name: ClassVar[str] = "proto_maml"
    classifies_only: ClassVar[bool] = True
    fuses_shards: ClassVar[bool] = False
    learns_update: ClassVar[str] = "proto_maml initialises its head from prototypes at every task"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bn_per_step or self.msl_steps:
            raise ValueError(f"algorithm.bn_per_step / algorithm.msl_steps: not with algorithm.name={self.config_name}")

    def prepare(self, c: Chunk) -> Chunk:
        head = head_prefix(c.model)
        if not any(k.startswith(head) for k in c.start):
            raise ValueError(f"algorithm.name={self.config_name}: the head ({head}*) must adapt (algorithm.adapt: "
                             "all or head)")
        init = prototype_head(c, head)
        # the inner loop's gradient is w.r.t. the head and the body as separate parameters (partial
        # derivatives): the body it adapts is a new node, not the one the prototypes were computed from
        body = {k: v.view_as(v) for k, v in c.start.items() if not k.startswith(head)}
        return dataclasses.replace(c, start={**body, **init})

    def chunk_gradient(self, c: Chunk) -> Sums:
        if self.is_second_order(c):
            return super().chunk_gradient(c)
        head = head_prefix(c.model)
        init = {k: v for k, v in c.start.items() if k.startswith(head)}
        loose = {k: v.detach().requires_grad_(True) for k, v in init.items()}  # the loop frees its own graph only
        c = dataclasses.replace(c, start={**c.start, **loose})
        return ProtoHeadFirstOrder(init).gradient(c, self.inner_loop(c))


@dataclass(frozen=True)
class FOProtoMAML(ProtoMAML):
    """fo-Proto-MAML, the paper's: ``FOProtoMAML(inner_lr=0.05, inner_steps=6)``."""

    second_order: ClassVar[bool] = False
    config_name: ClassVar[str] = "fo_proto_maml"

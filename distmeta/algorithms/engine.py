"""The engine every rule runs on: a batch cut into chunks of tasks, each chunk's work done
with plain autograd over a task-batched forward, the chunks' results summed in task order.

The per-task parameters of a chunk of T tasks are one tensor per name with a leading task
dimension (``theta`` broadcast with ``expand``, no copies); the forward runs all T tasks at
once (``torch.func.vmap`` of ``functional_call`` over the task dimension); every derivative
is ``torch.autograd.grad`` of the SUM of the per-task losses. Task t's loss depends only on
task t's slice, so the gradient with respect to the batched parameters is the stack of the
per-task gradients (and Hessian-vector products are per task, block-diagonal), while the
gradient with respect to the shared ``theta`` is the sum over tasks: what the runtime adds
across workers.

Nesting ``torch.func.grad`` inside ``vmap`` gives the same numbers with one more transform
layer on every operation, which on a CPU cost 1.2x (vmap) to 1.4-1.8x (per-task loop) on
the MAML sinusoid MLP and Conv4. With
``vectorize=False`` a chunk is one task and the forward is a plain call: the per-task loop
of learn2learn and higher, with one task's graph alive at a time.

The chunk and its maths are in :mod:`distmeta.algorithms.chunk`. Two kinds of rule run on
it: an :class:`~distmeta.algorithms.base.AdaptingRule` (MAML and its relatives, ERM) pairs an
inner update (:mod:`distmeta.algorithms.inner`) with a way to take the outer gradient
(:mod:`distmeta.algorithms.outer`); a :class:`~distmeta.algorithms.closed_form.HeadRule`
(R2-D2, ProtoNets) has no inner loop: its head is computed in closed form from the support
features and differentiated through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
from torch import Tensor

from distmeta.algorithms.chunk import Chunk

T = TypeVar("T")


def add(a: Any, b: Any) -> Any:
    """``a + b`` through tuples and dicts of tensors (the keys of ``b``)."""
    if isinstance(a, tuple):
        return tuple(add(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return {k: add(a[k], b[k]) for k in b}
    return a + b


def concat(a: Tensor, b: Tensor) -> Tensor:
    """Per-task outputs of consecutive chunks, one after the other."""
    return torch.cat([a, b])


def over_chunks(chunks: Iterable[Chunk], fn: Callable[[Chunk], T], combine: Callable[[T, T], T] | None = None) -> T:
    """``fn`` of every chunk, combined in task order: summed (:func:`add`) unless told otherwise."""
    combine = combine or add
    total: T | None = None
    for chunk in chunks:
        out = fn(chunk)
        total = out if total is None else combine(total, out)
    if total is None:
        raise ValueError("EpisodeBatch holds no tasks")
    return total

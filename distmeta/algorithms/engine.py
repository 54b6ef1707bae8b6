"""Meta-gradients of the adapting rules with plain autograd over a task-batched forward.

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

The chunk and its maths are in :mod:`distmeta.algorithms.chunk`; the rules (MAML, first-order
MAML, Reptile, iMAML) differ only in :meth:`BatchedRule.chunk_gradient`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from distmeta.algorithms.base import AdaptingRule
from distmeta.algorithms.chunk import Chunk, adaptation_metrics, gradients, inner_sgd, slices
from distmeta.algorithms.functional import adapted_names
from distmeta.types import EpisodeBatch, MetaGradient, Params

Sums = tuple[dict[str, Tensor], dict[str, Tensor]]


@dataclass(frozen=True)
class BatchedRule(AdaptingRule):
    """An adapting rule computed chunk by chunk with :class:`Chunk` (see the module docstring)."""

    def meta_gradient(self, model: nn.Module, params: Params, batch: EpisodeBatch) -> MetaGradient:
        names = adapted_names(params, self.adapt)
        total: Sums | None = None
        for part in slices(batch, self.vectorize, self.chunk_size):
            grads, metrics = self.chunk_gradient(Chunk.make(model, params, names, part, self.vectorize))
            grads = {k: grads[k].detach() for k in params}
            total = (grads, metrics) if total is None else (
                {k: total[0][k] + grads[k] for k in grads}, {k: total[1][k] + metrics[k] for k in metrics})
        if total is None:
            raise ValueError("EpisodeBatch holds no tasks")
        return MetaGradient(total[0], batch.n_tasks, {k: float(v) for k, v in total[1].items()})

    def chunk_gradient(self, c: Chunk) -> Sums:
        """The meta-gradient of the chunk's tasks and their metrics, both summed over tasks."""
        raise NotImplementedError


@dataclass(frozen=True)
class UnrolledRule(BatchedRule):
    """The query gradient after an unrolled SGD inner loop: through it (``second_order``,
    MAML) or at its end (first-order MAML)."""

    second_order: ClassVar[bool] = True

    def chunk_gradient(self, c: Chunk) -> Sums:
        fast, first = inner_sgd(c, self.inner_steps, self.inner_lr, self.second_order, self.inner_objective(c))
        q_loss, q_acc = c.query(fast)
        if self.second_order:
            grads = gradients(q_loss.sum(), c.theta)
        else:
            grads = gradients(q_loss.sum(), {**fast, **c.frozen})
            grads |= c.task_sum({k: grads[k] for k in fast})
        return grads, adaptation_metrics(c, fast, first, (q_loss, q_acc))

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

The chunk and its maths are in :mod:`distmeta.algorithms.chunk`; every rule (MAML and its
relatives, ERM, the closed-form heads) is an :class:`~distmeta.algorithms.base.AdaptingRule`
that differs in its ``chunk_gradient`` and, for the rules that learn it, its inner update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from distmeta.algorithms.base import AdaptingRule, Sums
from distmeta.algorithms.chunk import Chunk, adaptation_metrics, gradients, inner_loop


@dataclass(frozen=True)
class UnrolledRule(AdaptingRule):
    """The query gradient after an unrolled SGD inner loop: through it (``second_order``,
    MAML) or at its end (first-order MAML)."""

    second_order: ClassVar[bool] = True

    def is_second_order(self, c: Chunk) -> bool:
        """Whether chunk ``c`` differentiates through the loop (MAML++'s annealing may say no)."""
        return self.second_order

    def chunk_gradient(self, c: Chunk) -> Sums:
        second_order = self.is_second_order(c)
        fast, first = inner_loop(c, self, self.inner_steps, second_order, self.inner_objective(c))
        q_loss, q_acc = c.query(fast)
        if second_order:
            grads = gradients(q_loss.sum(), c.theta)
        else:
            grads = gradients(q_loss.sum(), {**fast, **c.frozen})
            grads |= c.task_sum({k: grads[k] for k in fast})
        return grads, adaptation_metrics(c, fast, first, (q_loss, q_acc))

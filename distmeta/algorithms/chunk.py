"""A chunk of tasks with a task-batched forward, and the maths every adapting rule runs on it.

See :mod:`distmeta.algorithms.engine` for why: per-task parameters are ``expand``ed views of
theta with a leading task dimension, the forward of the chunk is ``torch.func.vmap`` of
``functional_call``, and every derivative is ``torch.autograd.grad`` of the sum of the
per-task losses. A chunk of one task (the per-task loop) uses a plain forward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from distmeta.algorithms.functional import forward, split
from distmeta.losses import is_classification, task_loss
from distmeta.types import EpisodeBatch, LossKind, Params

BODY = "body."


@dataclass
class Chunk:
    """T tasks processed together, and the parameters they start from.

    ``theta``: every parameter, a leaf requiring grad; ``start``: the adapted names as
    per-task views ``[T, ...]`` (``batched``) or the shared tensors (a chunk of one task);
    ``frozen``: the rest, shared by all tasks.
    """

    model: nn.Module
    kind: LossKind
    theta: Params
    start: Params
    frozen: Params
    batch: EpisodeBatch
    batched: bool
    step: int = 0

    @classmethod
    def make(cls, model: nn.Module, params: Params, names: tuple[str, ...], batch: EpisodeBatch,
             batched: bool, step: int = 0) -> Chunk:
        """``step`` is the outer step (for rules whose behaviour is scheduled over training)."""
        theta = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        adapted, frozen = split(theta, names)
        n = batch.n_tasks
        start = {k: v.expand(n, *v.shape) for k, v in adapted.items()} if batched else dict(adapted)
        return cls(model, batch.loss, theta, start, frozen, batch, batched, step)  # type: ignore[arg-type]

    def losses(self, adapted: Mapping[str, Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Per-task losses and accuracies ``[T]`` with ``adapted`` parameters on inputs ``x``."""
        def one(p: Mapping[str, Tensor], xi: Tensor, yi: Tensor) -> tuple[Tensor, Tensor]:
            return task_loss(self.kind, forward(self.model, {**self.frozen, **p}, xi), yi)

        if self.batched:
            return vmap(one, randomness="different")(adapted, x, y)  # DropBlock: per-task draws
        loss, acc = one(adapted, x[0], y[0])
        return loss.unsqueeze(0), acc.unsqueeze(0)

    def outputs(self, adapted: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """Per-task model outputs ``[T, N, ...]`` with ``adapted`` parameters on inputs ``x``."""
        def one(p: Mapping[str, Tensor], xi: Tensor) -> Tensor:
            return forward(self.model, {**self.frozen, **p}, xi)

        return vmap(one, randomness="different")(adapted, x) if self.batched else one(adapted, x[0]).unsqueeze(0)

    def features(self, x: Tensor) -> Tensor:
        """Per-task body features ``[T, N, F]`` with the chunk's (shared) body parameters: the
        input of closed-form heads. Each task's forward is its own (transductive BatchNorm)."""
        body = {k[len(BODY):]: v for k, v in {**self.frozen, **self.start}.items() if k.startswith(BODY)}
        if self.batched and any(k.startswith(BODY) for k in self.start):
            raise ValueError("features: the body must not adapt for a closed-form head")

        def one(xi: Tensor) -> Tensor:
            return functional_call(self.model.body, body, (xi,))

        return vmap(one, randomness="different")(x) if self.batched else one(x[0]).unsqueeze(0)

    def support(self, adapted: Mapping[str, Tensor]) -> Tensor:
        return self.losses(adapted, self.batch.support_x, self.batch.support_y)[0]

    def query(self, adapted: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        return self.losses(adapted, self.batch.query_x, self.batch.query_y)

    def task_dot(self, a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensor:
        """Per-task inner products ``[T]`` (a scalar for a chunk of one task)."""
        if self.batched:
            return sum((a[k] * b[k]).flatten(1).sum(1) for k in a)  # type: ignore[return-value]
        return sum((a[k] * b[k]).sum() for k in a)  # type: ignore[return-value]

    def per_task(self, scalar: Tensor, like: Tensor) -> Tensor:
        """A per-task scalar shaped to broadcast against a per-task tensor ``like``."""
        return scalar.reshape(-1, *[1] * (like.dim() - 1)) if self.batched else scalar

    def task_sum(self, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Per-task tensors summed over the chunk's tasks."""
        return {k: v.sum(0) if self.batched else v for k, v in tensors.items()}


def slices(batch: EpisodeBatch, vectorize: bool, chunk_size: int | None) -> Iterator[EpisodeBatch]:
    """The batch cut into the chunks processed together: single tasks on the per-task loop."""
    size = (chunk_size or batch.n_tasks) if vectorize else 1
    for start in range(0, batch.n_tasks, size):
        yield batch.slice(start, min(start + size, batch.n_tasks))


class InnerUpdate(Protocol):
    """The inner update: the state it carries across the steps of one inner loop, and the
    step from the gradients. SGD (``fast - inner_lr * grads``) is the default of every rule;
    Meta-SGD, MAML++'s LSLR and Meta-KFO learn theirs (their meta-parameters are in ``c.theta``)."""

    def inner_state(self, c: Chunk) -> Any: ...

    def inner_step(self, c: Chunk, fast: Params, grads: Params, k: int, state: Any) -> tuple[Params, Any]: ...


@dataclass
class InnerStep:
    """One step of the inner loop: the parameters before and after, the loss at ``before``
    (per task) and its gradients."""

    k: int
    before: Params
    loss: Tensor
    grads: Params
    after: Params


def inner_path(c: Chunk, update: InnerUpdate, steps: int, second_order: bool,
               objective: Callable[[Params], Tensor] | None = None,
               start: Params | None = None) -> Iterator[InnerStep]:
    """``steps`` inner steps per task from ``start`` (default ``c.start``) on the support loss
    (or ``objective``, per-task values ``[T]``), each made by ``update.inner_step``. With
    ``second_order`` the steps stay on the graph (MAML), otherwise every step is detached."""
    loss_fn = objective or c.support
    fast, state = (c.start if start is None else start), update.inner_state(c)
    for k in range(steps):
        loss = loss_fn(fast)
        grads = dict(zip(fast, torch.autograd.grad(loss.sum(), list(fast.values()), create_graph=second_order),
                         strict=True))
        after, state = update.inner_step(c, fast, grads, k, state)
        if not second_order:
            after = {n: v.detach().requires_grad_(True) for n, v in after.items()}
        yield InnerStep(k, fast, loss, grads, after)
        fast = after


def inner_loop(c: Chunk, update: InnerUpdate, steps: int, second_order: bool,
               objective: Callable[[Params], Tensor] | None = None) -> tuple[Params, Tensor]:
    """The adapted parameters after ``steps`` inner steps, and the first inner loss."""
    fast, first = c.start, None
    for step in inner_path(c, update, steps, second_order, objective):
        first = step.loss.detach() if first is None else first
        fast = step.after
    if first is None:
        with torch.no_grad():
            first = (objective or c.support)(fast)
    return fast, first


def gradients(output: Tensor, wrt: Mapping[str, Tensor], **kwargs) -> dict[str, Tensor]:
    """``d output / d wrt`` by name; zeros for tensors ``output`` does not depend on."""
    if not output.requires_grad:
        return {k: torch.zeros_like(v) for k, v in wrt.items()}
    out = torch.autograd.grad(output, list(wrt.values()), allow_unused=True, **kwargs)
    return {k: torch.zeros_like(wrt[k]) if g is None else g for k, g in zip(wrt, out, strict=True)}


def conjugate_gradient(c: Chunk, matvec: Callable[[Params], Params], b: Params, steps: int) -> Params:
    """Solve ``A_t x_t = b_t`` for every task's symmetric positive definite ``A_t`` by
    ``steps`` CG iterations from 0 (Hestenes and Stiefel 1952), all tasks at once.

    A fixed iteration count, and a zero residual is handled without dividing by zero.
    """
    def axpy(alpha: Tensor, x: Params, y: Params) -> Params:
        return {k: c.per_task(alpha, y[k]) * x[k] + y[k] for k in y}

    def safe_div(num: Tensor, den: Tensor) -> Tensor:
        return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))

    x = {k: torch.zeros_like(v) for k, v in b.items()}
    r, p = dict(b), dict(b)
    rr = c.task_dot(r, r)
    for _ in range(steps):
        ap = matvec(p)
        alpha = safe_div(rr, c.task_dot(p, ap))
        x = axpy(alpha, p, x)
        r = axpy(-alpha, ap, r)
        rr_new = c.task_dot(r, r)
        p = axpy(safe_div(rr_new, rr), p, r)
        rr = rr_new
    return x


def adaptation_metrics(c: Chunk, fast: Params, support_before: Tensor,
                       query_after: tuple[Tensor, Tensor] | None = None) -> dict[str, Tensor]:
    """Pre/post-adaptation losses (and accuracies) SUMMED over the chunk's tasks; the inner
    loop's first loss and the outer objective are reused when given, not recomputed."""
    with torch.no_grad():
        q_before, acc_before = c.query(c.start)
        q_after, acc_after = query_after if query_after is not None else c.query(fast)
        metrics = {"query_loss": q_after.detach().sum(), "query_loss_before": q_before.sum(),
                   "support_loss_before": support_before.detach().sum(), "support_loss_after": c.support(fast).sum()}
        if is_classification(c.kind):
            metrics |= {"query_acc": acc_after.detach().sum(), "query_acc_before": acc_before.sum()}
    return metrics



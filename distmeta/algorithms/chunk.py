"""A chunk of tasks with a task-batched forward, and the maths every adapting rule runs on it.

See :mod:`distmeta.algorithms.engine` for why: per-task parameters are ``expand``ed views of
theta with a leading task dimension, the forward of the chunk is ``torch.func.vmap`` of
``functional_call``, and every derivative is ``torch.autograd.grad`` of the sum of the
per-task losses. A chunk of one task (the per-task loop) uses a plain forward.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from distmeta.algorithms.functional import RULE_PREFIX, forward, split
from distmeta.losses import batched_task_loss, is_classification, task_loss
from distmeta.models.batched import forward_tasks, supports
from distmeta.types import EpisodeBatch, EpisodeGroups, LossKind, Params

BODY = "body."

Sums = tuple[dict[str, Tensor], dict[str, Tensor]]
"""A chunk's meta-gradient and metrics, both summed over its tasks."""


@dataclass
class Chunk:
    """T tasks processed together, and the parameters they start from.

    ``theta``: every parameter, a leaf requiring grad; ``start``: the adapted names as
    per-task views ``[T, ...]`` (``batched``) or the shared tensors (a chunk of one task);
    ``frozen``: the rest, shared by all tasks; ``report``: whether the rule computes its
    metrics (only the steps that are logged do: the extra forwards cost as much as a step).

    ``groups``: the chunk holds the tasks of that many logical shards, one after the other
    (:meth:`grouped`); ``None`` is one batch of tasks.
    """

    model: nn.Module
    kind: LossKind
    theta: Params
    start: Params
    frozen: Params
    batch: EpisodeBatch
    batched: bool
    step: int = 0
    report: bool = True
    groups: int | None = None

    @classmethod
    def make(cls, model: nn.Module, params: Params, names: tuple[str, ...], batch: EpisodeBatch,
             batched: bool, step: int = 0, report: bool = True) -> Chunk:
        """``step`` is the outer step (for rules whose behaviour is scheduled over training)."""
        theta = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        adapted, frozen = split(theta, names)
        n = batch.n_tasks
        start = {k: v.expand(n, *v.shape) for k, v in adapted.items()} if batched else dict(adapted)
        return cls(model, batch.loss, theta, start, frozen, batch, batched, step, report)  # type: ignore[arg-type]

    @classmethod
    def grouped(cls, model: nn.Module, params: Params, batch: EpisodeBatch, groups: int, step: int = 0,
                report: bool = True) -> Chunk:
        """The tasks of ``groups`` logical shards (``batch``: theirs one after the other, the same
        number each) in one chunk, with every parameter adapted and each shard's sums as they
        would be alone: ``theta[k]`` is ``[groups, ...]``, one copy per shard; the tasks of
        shard s start from views of row s; :meth:`task_sum` and :meth:`task_total` sum each
        shard's slice of tasks separately, in task order. The gradient of row s is then shard
        s's own, by the same reductions over the same per-task tensors as a call on its own."""
        if batch.n_tasks % groups:
            raise ValueError(f"Chunk.grouped: {batch.n_tasks} tasks do not split into {groups} shards")
        per = batch.n_tasks // groups
        theta = {k: v.detach().unsqueeze(0).repeat(groups, *[1] * v.dim()).requires_grad_(True)
                 for k, v in params.items()}
        start = {k: torch.cat([v[s].expand(per, *v.shape[1:]) for s in range(groups)]) for k, v in theta.items()}
        return cls(model, batch.loss, theta, start, {}, batch, True, step, report, groups)  # type: ignore[arg-type]

    def _shards(self, per_task: Tensor) -> list[Tensor]:
        per = self.batch.n_tasks // self.groups  # type: ignore[operator]
        return [per_task[s * per:(s + 1) * per] for s in range(self.groups)]  # type: ignore[arg-type]

    def losses(self, adapted: Mapping[str, Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Per-task losses and accuracies ``[T]`` with ``adapted`` parameters on inputs ``x``."""
        def one(p: Mapping[str, Tensor], xi: Tensor, yi: Tensor) -> tuple[Tensor, Tensor]:
            return task_loss(self.kind, self.episode_logits(forward(self.model, {**self.frozen, **p}, xi)), yi)

        if self.batched and supports(self.model, x.device.type):
            return batched_task_loss(self.kind, self.episode_logits(self.outputs(adapted, x)), y)
        if self.batched:
            return vmap(one, randomness="different")(adapted, x, y)  # DropBlock: per-task draws
        loss, acc = one(adapted, x[0], y[0])
        return loss.unsqueeze(0), acc.unsqueeze(0)

    def episode_logits(self, prediction: Tensor) -> Tensor:
        """A head with more outputs than the episode has classes (sized for the most ways of
        variable-way episodes) gives logits for the episode's classes only, its first
        ``classes`` outputs: the others get no gradient (Triantafillou et al. 2020's MAML)."""
        way = self.batch.classes
        if way is not None and is_classification(self.kind) and prediction.shape[-1] > way:
            return prediction[..., :way]
        return prediction

    def outputs(self, adapted: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """Per-task model outputs ``[T, N, ...]`` with ``adapted`` parameters on inputs ``x``:
        the task-batched forward (:mod:`distmeta.models.batched`) where the model's layers
        allow, else ``vmap`` of the model's forward."""
        def one(p: Mapping[str, Tensor], xi: Tensor) -> Tensor:
            return forward(self.model, {**self.frozen, **p}, xi)

        if self.batched and supports(self.model, x.device.type):
            shared = {k: v for k, v in self.frozen.items() if not k.startswith(RULE_PREFIX)}
            return forward_tasks(self.model, {**shared, **adapted}, x)
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
        """Per-task tensors summed over the chunk's tasks (per shard in a :meth:`grouped` chunk:
        ``[groups, ...]``)."""
        if self.groups is not None:
            return {k: torch.stack([part.sum(0) for part in self._shards(v)]) for k, v in tensors.items()}
        return {k: v.sum(0) if self.batched else v for k, v in tensors.items()}

    def task_total(self, per_task: Tensor) -> Tensor:
        """A per-task scalar ``[T]`` summed over the chunk's tasks (per shard in a
        :meth:`grouped` chunk: ``[groups]``)."""
        if self.groups is not None:
            return torch.stack([part.sum() for part in self._shards(per_task)])
        return per_task.sum()


def slices(batch: EpisodeBatch | EpisodeGroups, vectorize: bool, chunk_size: int | None) -> Iterator[EpisodeBatch]:
    """The batch cut into the chunks processed together: single tasks on the per-task loop;
    tasks of different sizes (:class:`EpisodeGroups`) group by group."""
    if isinstance(batch, EpisodeGroups):
        for group in batch.groups:
            yield from slices(group, vectorize, chunk_size)
        return
    size = (chunk_size or batch.n_tasks) if vectorize else 1
    for start in range(0, batch.n_tasks, size):
        yield batch.slice(start, min(start + size, batch.n_tasks))


def gradients(output: Tensor, wrt: Mapping[str, Tensor], **kwargs) -> dict[str, Tensor]:
    """``d output / d wrt`` by name; zeros for tensors ``output`` does not depend on."""
    if not output.requires_grad:
        return {k: torch.zeros_like(v) for k, v in wrt.items()}
    out = torch.autograd.grad(output, list(wrt.values()), allow_unused=True, **kwargs)
    return {k: torch.zeros_like(wrt[k]) if g is None else g for k, g in zip(wrt, out, strict=True)}


def adaptation_metrics(c: Chunk, fast: Params, support_before: Tensor,
                       query_after: tuple[Tensor, Tensor] | None = None) -> dict[str, Tensor]:
    """Pre/post-adaptation losses (and accuracies) SUMMED over the chunk's tasks; the inner
    loop's first loss and the outer objective are reused when given, not recomputed. None
    on a step that is not reported (``c.report``)."""
    if not c.report:
        return {}
    with torch.no_grad():
        q_before, acc_before = c.query(c.start)
        q_after, acc_after = query_after if query_after is not None else c.query(fast)
        metrics = {"query_loss": q_after.detach(), "query_loss_before": q_before,
                   "support_loss_before": support_before.detach(), "support_loss_after": c.support(fast)}
        if is_classification(c.kind):
            metrics |= {"query_acc": acc_after.detach(), "query_acc_before": acc_before}
    return {k: c.task_total(v) for k, v in metrics.items()}

"""What every rule shares: hyper-parameters, validation, the chunked meta-gradient and the
scores of evaluation; and what every rule with an inner loop adds: an inner update
(:mod:`distmeta.algorithms.inner`), a way to take the outer gradient
(:mod:`distmeta.algorithms.outer`), evaluation and prediction with that inner update."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from distmeta.algorithms.chunk import Chunk, Sums, slices
from distmeta.algorithms.engine import concat, over_chunks
from distmeta.algorithms.functional import Adapt, adapted_names
from distmeta.algorithms.inner import SGD, InnerLoop, InnerUpdate
from distmeta.algorithms.outer import OuterGradient
from distmeta.models.base import head_prefix
from distmeta.models.batched import fuses
from distmeta.types import EpisodeBatch, MetaGradient, Params

T = TypeVar("T")


@dataclass(frozen=True)
class Evaluation:
    """Query loss and accuracy after 0..N inner steps, SUMMED over ``n_tasks`` tasks (with
    their sums of squares, for confidence intervals). Evaluations of batches add with ``+``."""

    query_loss: list[float]
    query_acc: list[float]
    n_tasks: int
    query_loss_sq: list[float] = field(default_factory=list)
    query_acc_sq: list[float] = field(default_factory=list)

    @classmethod
    def from_sums(cls, sums: dict[str, Tensor], n_tasks: int) -> Evaluation:
        return cls(sums["loss"].tolist(), sums["acc"].tolist(), n_tasks, sums["loss_sq"].tolist(),
                   sums["acc_sq"].tolist())

    def mean(self) -> tuple[list[float], list[float]]:
        return ([v / self.n_tasks for v in self.query_loss], [v / self.n_tasks for v in self.query_acc])

    def ci95(self) -> tuple[list[float], list[float]]:
        """Half-widths of the 95% normal confidence intervals of the means, per step."""
        def half(sums: list[float], squares: list[float]) -> list[float]:
            n = self.n_tasks
            out = []
            for s, q in zip(sums, squares, strict=True):
                var = max(q / n - (s / n) ** 2, 0.0) * n / max(n - 1, 1)
                out.append(1.96 * math.sqrt(var / n))
            return out
        return half(self.query_loss, self.query_loss_sq), half(self.query_acc, self.query_acc_sq)

    def __add__(self, other: Evaluation) -> Evaluation:
        def add(a: list[float], b: list[float]) -> list[float]:
            return [x + y for x, y in zip(a, b, strict=True)]
        return Evaluation(add(self.query_loss, other.query_loss), add(self.query_acc, other.query_acc),
                          self.n_tasks + other.n_tasks, add(self.query_loss_sq, other.query_loss_sq),
                          add(self.query_acc_sq, other.query_acc_sq))


def score_sums(loss: Tensor, acc: Tensor) -> dict[str, Tensor]:
    """The task sums of per-task scores ``[T, points]`` (and of their squares), per point: what
    chunks add and :meth:`Evaluation.from_sums` reads."""
    return {"loss": loss.sum(0), "acc": acc.sum(0), "loss_sq": (loss ** 2).sum(0), "acc_sq": (acc ** 2).sum(0)}


def host_floats(sums: dict[str, Tensor]) -> dict[str, Any]:
    """Metric sums (scalars, or one per shard) as Python floats, in one device-to-host copy:
    the one synchronisation of a logged step (none on the others: there are no metrics)."""
    if not sums:
        return {}
    values = torch.stack([v.detach().to(torch.float64) for v in sums.values()]).tolist()
    return dict(zip(sums, values, strict=True))


def check_positive(owner: str, name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
        raise ValueError(f"{owner}.{name}={value!r}: must be a finite number > 0")


def model_params(model: nn.Module) -> Params:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@dataclass(frozen=True, kw_only=True)
class Rule:
    """What every rule shares (the interface of :class:`distmeta.types.MetaAlgorithm`:
    :meth:`init_params`, :meth:`meta_gradient`, :meth:`evaluate`) and the engine: the batch is
    cut into chunks of tasks (see :mod:`distmeta.algorithms.engine`), and a rule implements
    :meth:`chunk_gradient`. ``vectorize`` runs a chunk of tasks at once (``torch.func.vmap``
    of the forward, chunked by ``chunk_size``); ``False`` runs the per-task loop."""

    vectorize: bool = True
    chunk_size: int | None = None

    config_name: ClassVar[str] = ""
    """The rule's ``algorithm.name``, for messages that name it (a plugin's: its class name)."""

    classifies_only: ClassVar[bool] = False
    """Whether the rule takes classification tasks only (its head is built from the classes)."""

    fuses_shards: ClassVar[bool] = False
    """Whether :meth:`shard_gradients` may run several logical shards as one chunk
    (:meth:`Chunk.grouped`): true for the rules whose every sum over tasks goes through
    :meth:`Chunk.task_sum` and :func:`~distmeta.algorithms.chunk.adaptation_metrics`."""

    def __post_init__(self) -> None:
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"algorithm({type(self).__name__}).chunk_size={self.chunk_size!r}: must be >= 1 or null")

    def init_params(self, model: nn.Module) -> Params:
        """The meta-parameters: the model's, plus any the rule owns (``rule.*``)."""
        return model_params(model)

    def over_chunks(self, model: nn.Module, params: Params, batch: EpisodeBatch, fn: Callable[[Chunk], T],
                    step: int = 0, combine: Callable[[T, T], T] | None = None, report: bool = True) -> T:
        """``fn`` of each chunk of ``batch``, summed over the chunks (or ``combine``d)."""
        names = self.adapted(params, model)
        chunks = (self.prepare(Chunk.make(model, params, names, part, self.vectorize, step, report))
                  for part in slices(batch, self.vectorize, self.chunk_size))
        return over_chunks(chunks, fn, combine)

    def prepare(self, c: Chunk) -> Chunk:
        """The chunk as the rule starts from it: as made (Proto-MAML sets each task's head)."""
        return c

    def meta_gradient(self, model: nn.Module, params: Params, batch: EpisodeBatch, step: int = 0,
                      metrics: bool = True) -> MetaGradient:
        """The meta-gradient and metrics of ``batch``, SUMMED over its tasks; ``step`` is the
        outer step (for rules scheduled over training). ``metrics=False`` skips the metrics
        (the runtime computes them on the logged steps only): the gradient is the same."""
        def one(c: Chunk) -> Sums:
            grads, sums = self.chunk_gradient(c)
            return {k: grads[k].detach() for k in params}, sums

        grads, sums = self.over_chunks(model, params, batch, one, step, report=metrics)
        return MetaGradient(grads, batch.n_tasks, host_floats(sums))

    def shard_gradients(self, model: nn.Module, params: Params, batches: list[EpisodeBatch], step: int = 0,
                        metrics: bool = True) -> list[MetaGradient]:
        """:meth:`meta_gradient` of each logical shard's batch, in as few engine calls as keep
        each shard's sums exactly what they are on their own (see :meth:`fused_group`)."""
        group = self.fused_group(model, params, batches)
        if not group:
            return [self.meta_gradient(model, params, b, step, metrics) for b in batches]
        out: list[MetaGradient] = []
        for at in range(0, len(batches), group):
            part = batches[at:at + group]
            c = Chunk.grouped(model, params, EpisodeBatch.cat(part), len(part), step, metrics)
            grads, sums = self.chunk_gradient(c)
            values = host_floats(sums)
            out += [MetaGradient({k: grads[k][s].detach() for k in params}, b.n_tasks,
                                 {k: v[s] for k, v in values.items()}) for s, b in enumerate(part)]
        return out

    def fused_group(self, model: nn.Module, params: Params, batches: list[EpisodeBatch]) -> int:
        """How many shards one call takes; 0: one call per shard, as :meth:`meta_gradient`.

        Shards fuse when the rule says it can (``fuses_shards``), every parameter adapts (a
        shared parameter's gradient would be reduced over all tasks of the call inside the
        kernels, in an order that depends on how many there are), the model's per-task
        kernels give each task the same numbers in any batch
        (:func:`~distmeta.models.batched.fuses`: they draw no random numbers either), and the
        shards' batches are of one layout and of 2 tasks or more each. ``chunk_size`` bounds
        the tasks of a call."""
        if not (self.fuses_shards and self.vectorize and batches) or not isinstance(batches[0], EpisodeBatch):
            return 0
        first = batches[0]
        if first.n_tasks < 2 or any(b.layout() != first.layout() or b.n_tasks != first.n_tasks for b in batches):
            return 0
        if set(self.adapted(params, model)) != set(params) or not fuses(model, first.support_x.device.type):
            return 0
        if self.chunk_size is None:
            return len(batches)
        return self.chunk_size // first.n_tasks

    def chunk_gradient(self, c: Chunk) -> Sums:
        """The meta-gradient of the chunk's tasks w.r.t. ``c.theta`` and their metrics, both
        summed over tasks."""
        raise NotImplementedError

    def adapted(self, params: Params, model: nn.Module | None = None) -> tuple[str, ...]:
        """The names that adapt in the inner loop (none without one); ``model`` says which
        parameters are its head (``model.head``)."""
        return ()

    def evaluate(self, model: nn.Module, params: Params, batch: EpisodeBatch,
                 steps: int | None = None) -> Evaluation:
        """Query loss/accuracy per number of inner steps, summed over tasks."""
        raise NotImplementedError


@dataclass(frozen=True)
class AdaptingRule(Rule):
    """A rule with an inner loop on the support set: an inner update (:meth:`inner_update`,
    SGD at ``inner_lr`` by default), which the meta-gradient, :meth:`evaluate` and
    :meth:`predict` all use, and a way to take the outer gradient (:meth:`outer_gradient`).
    ``adapt`` picks what adapts: ``all``, ``head`` (ANIL, Raghu et al. 2020) or a list of
    parameter names."""

    inner_lr: float = 0.01
    inner_steps: int = 1
    adapt: Adapt = "all"

    min_inner_steps: ClassVar[int] = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        name = f"algorithm({type(self).__name__})"
        check_positive(name, "inner_lr", self.inner_lr)
        if not isinstance(self.inner_steps, int) or self.inner_steps < self.min_inner_steps:
            raise ValueError(f"{name}.inner_steps={self.inner_steps!r}: must be an integer >= {self.min_inner_steps}")
        if isinstance(self.adapt, list):
            object.__setattr__(self, "adapt", tuple(self.adapt))
        if isinstance(self.adapt, str) and self.adapt not in ("all", "head"):
            raise ValueError(f"{name}.adapt={self.adapt!r}: expected 'all', 'head' or a list of parameter names")

    def adapted(self, params: Params, model: nn.Module | None = None) -> tuple[str, ...]:
        return adapted_names(params, self.adapt, head_prefix(model))

    def init_params(self, model: nn.Module) -> Params:
        params = model_params(model)
        return params | self.inner_update().init_params(model, params, self.adapted(params, model))

    # -- the two parts of a rule -----------------------------------------------------------
    def inner_update(self) -> InnerUpdate:
        """The inner update (SGD at ``inner_lr``)."""
        return SGD(self.inner_lr)

    def outer_gradient(self, c: Chunk) -> OuterGradient:
        """How chunk ``c`` takes the outer gradient (it may depend on the outer step ``c.step``)."""
        raise NotImplementedError

    def inner_objective(self, c: Chunk) -> Callable[[Params], Tensor] | None:
        """The per-task losses the inner loop descends on chunk ``c``; ``None`` is the plain
        support loss (iMAML adds a proximal term)."""
        return None

    def inner_loop(self, c: Chunk, steps: int | None = None) -> InnerLoop:
        """The inner loop on chunk ``c``: ``steps`` (default ``inner_steps``) of the update."""
        return InnerLoop(self.inner_update(), self.inner_steps if steps is None else steps, self.inner_objective(c))

    def chunk_gradient(self, c: Chunk) -> Sums:
        return self.outer_gradient(c).gradient(c, self.inner_loop(c))

    # -- prediction and evaluation ---------------------------------------------------------
    def predict(self, model: nn.Module, params: Params, batch: EpisodeBatch, steps: int | None = None) -> Tensor:
        """Model outputs ``[T, Q, ...]`` on each task's query inputs after ``steps`` inner steps
        on its support set (default ``inner_steps``): what :meth:`evaluate` scores at that step."""
        def one(c: Chunk) -> Tensor:
            fast, _ = self.inner_loop(c, steps).run(c, second_order=False)
            with torch.no_grad():
                return c.outputs(fast, c.batch.query_x)

        return self.over_chunks(model, params, batch, one, combine=concat)

    def evaluate(self, model: nn.Module, params: Params, batch: EpisodeBatch,
                 steps: int | None = None) -> Evaluation:
        """Query loss/accuracy after 0, 1, ..., ``steps`` inner steps (default ``inner_steps``),
        with the rule's own inner update."""
        steps = self.inner_steps if steps is None else steps
        if steps < 0:
            raise ValueError(f"evaluation steps={steps}: must be >= 0")

        def one(c: Chunk) -> dict[str, Tensor]:
            with torch.no_grad():
                curve = [c.query(c.start)]
            for step in self.inner_loop(c, steps).path(c, second_order=False):
                with torch.no_grad():
                    curve.append(c.query(step.after))
            loss, acc = (torch.stack([point[i] for point in curve], 1) for i in (0, 1))  # [T, steps + 1]
            return score_sums(loss, acc)

        return Evaluation.from_sums(self.over_chunks(model, params, batch, one), batch.n_tasks)

"""What every rule shares: hyper-parameters, validation, the chunked meta-gradient, the inner
update hook, evaluation and prediction."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from distmeta.algorithms.chunk import Chunk, inner_loop, inner_path, slices
from distmeta.algorithms.functional import Adapt, adapted_names
from distmeta.types import EpisodeBatch, MetaGradient, Params


@dataclass(frozen=True)
class Evaluation:
    """Query loss and accuracy after 0..N inner steps, SUMMED over ``n_tasks`` tasks (with
    their sums of squares, for confidence intervals). Evaluations of batches add with ``+``."""

    query_loss: list[float]
    query_acc: list[float]
    n_tasks: int
    query_loss_sq: list[float] = field(default_factory=list)
    query_acc_sq: list[float] = field(default_factory=list)

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


def evaluation_from_sums(out: dict[str, Tensor], n_tasks: int) -> Evaluation:
    return Evaluation(out["loss"].tolist(), out["acc"].tolist(), n_tasks,
                      out["loss_sq"].tolist(), out["acc_sq"].tolist())


def check_positive(owner: str, name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{owner}.{name}={value!r}: must be a number > 0")


def model_params(model: nn.Module) -> Params:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


Sums = tuple[dict[str, Tensor], dict[str, Tensor]]


@dataclass(frozen=True, kw_only=True)
class Rule:
    """What every rule shares (the interface of :class:`distmeta.types.MetaAlgorithm`:
    :meth:`init_params`, :meth:`meta_gradient`, :meth:`evaluate`) and the engine: the batch is
    cut into chunks of tasks (see :mod:`distmeta.algorithms.engine`), and a rule implements
    :meth:`chunk_gradient`. ``vectorize`` runs a chunk of tasks at once (``torch.func.vmap``
    of the forward, chunked by ``chunk_size``); ``False`` runs the per-task loop."""

    vectorize: bool = True
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"algorithm({type(self).__name__}).chunk_size={self.chunk_size!r}: must be >= 1 or null")

    def init_params(self, model: nn.Module) -> Params:
        """The meta-parameters: the model's, plus any the rule owns (``rule.*``)."""
        return model_params(model)

    def meta_gradient(self, model: nn.Module, params: Params, batch: EpisodeBatch, step: int = 0) -> MetaGradient:
        """The meta-gradient and metrics of ``batch``, SUMMED over its tasks; ``step`` is the
        outer step (for rules scheduled over training)."""
        names = self.adapted(params)
        total: Sums | None = None
        for part in slices(batch, self.vectorize, self.chunk_size):
            grads, metrics = self.chunk_gradient(Chunk.make(model, params, names, part, self.vectorize, step))
            grads = {k: grads[k].detach() for k in params}
            total = (grads, metrics) if total is None else (
                {k: total[0][k] + grads[k] for k in grads}, {k: total[1][k] + metrics[k] for k in metrics})
        if total is None:
            raise ValueError("EpisodeBatch holds no tasks")
        return MetaGradient(total[0], batch.n_tasks, {k: float(v) for k, v in total[1].items()})

    def chunk_gradient(self, c: Chunk) -> Sums:
        """The meta-gradient of the chunk's tasks w.r.t. ``c.theta`` and their metrics, both
        summed over tasks."""
        raise NotImplementedError

    def adapted(self, params: Params) -> tuple[str, ...]:
        """The names that adapt in the inner loop (none without one)."""
        return ()

    def evaluate(self, model: nn.Module, params: Params, batch: EpisodeBatch,
                 steps: int | None = None) -> Evaluation:
        """Query loss/accuracy per number of inner steps, summed over tasks."""
        raise NotImplementedError


@dataclass(frozen=True)
class AdaptingRule(Rule):
    """A rule with an inner loop on the support set. It may change the inner update
    (:meth:`inner_state`, :meth:`inner_step`: SGD by default), which the meta-gradient,
    :meth:`evaluate` and :meth:`predict` all use, so a rule that learns its inner update is
    one file. ``adapt`` picks what adapts: ``all``, ``head`` (ANIL, Raghu et al. 2020) or a
    list of parameter names."""

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

    def adapted(self, params: Params) -> tuple[str, ...]:
        return adapted_names(params, self.adapt)

    # -- the inner loop --------------------------------------------------------------------
    def inner_state(self, c: Chunk) -> Any:
        """What the inner update carries from step to step of one inner loop (SGD: nothing)."""
        return None

    def inner_step(self, c: Chunk, fast: Params, grads: Params, k: int, state: Any) -> tuple[Params, Any]:
        """Inner step ``k``: ``fast - inner_lr * grads`` (SGD)."""
        return {n: fast[n] - self.inner_lr * grads[n] for n in fast}, state

    def inner_objective(self, c: Chunk) -> Callable[[Params], Tensor] | None:
        """The per-task losses the inner loop descends on chunk ``c``; ``None`` is the plain
        support loss (iMAML adds a proximal term)."""
        return None

    # -- prediction ------------------------------------------------------------------------
    def predict(self, model: nn.Module, params: Params, batch: EpisodeBatch, steps: int | None = None) -> Tensor:
        """Model outputs ``[T, Q, ...]`` on each task's query inputs after ``steps`` inner steps
        on its support set (default ``inner_steps``): what :meth:`evaluate` scores at that step."""
        steps = self.inner_steps if steps is None else steps
        outs = []
        for part in slices(batch, self.vectorize, self.chunk_size):
            c = Chunk.make(model, params, self.adapted(params), part, self.vectorize)
            fast, _ = inner_loop(c, self, steps, False, self.inner_objective(c))
            with torch.no_grad():
                outs.append(c.outputs(fast, part.query_x))
        return torch.cat(outs)

    # -- evaluation ------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, params: Params, batch: EpisodeBatch,
                 steps: int | None = None) -> Evaluation:
        """Query loss/accuracy after 0, 1, ..., ``steps`` inner steps (default ``inner_steps``),
        with the rule's own inner update."""
        steps = self.inner_steps if steps is None else steps
        if steps < 0:
            raise ValueError(f"evaluation steps={steps}: must be >= 0")
        total: dict[str, Tensor] | None = None
        for part in slices(batch, self.vectorize, self.chunk_size):
            c = Chunk.make(model, params, self.adapted(params), part, self.vectorize)
            with torch.no_grad():
                curve = [c.query(c.start)]
            for step in inner_path(c, self, steps, False, self.inner_objective(c)):
                with torch.no_grad():
                    curve.append(c.query(step.after))
            loss_t, acc_t = (torch.stack([point[i] for point in curve], 1) for i in (0, 1))  # [T, steps + 1]
            sums = {"loss": loss_t.sum(0), "acc": acc_t.sum(0), "loss_sq": (loss_t ** 2).sum(0),
                    "acc_sq": (acc_t ** 2).sum(0)}
            total = sums if total is None else {k: total[k] + sums[k] for k in sums}
        if total is None:
            raise ValueError("EpisodeBatch holds no tasks")
        return evaluation_from_sums(total, batch.n_tasks)

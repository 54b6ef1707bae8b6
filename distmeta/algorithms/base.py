"""What the adapting rules share: hyper-parameters, validation, the inner loop, evaluation."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from distmeta.algorithms.chunk import Chunk, inner_sgd, slices
from distmeta.algorithms.functional import Adapt, adapted_names, run_per_task
from distmeta.types import EpisodeBatch, LossKind, MetaGradient, Params


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


@dataclass(frozen=True)
class AdaptingRule:
    """Hyper-parameters of a rule with an inner loop of SGD on the support set.

    ``adapt`` picks what adapts: ``all``, ``head`` (ANIL, Raghu et al. 2020) or a list of
    parameter names. ``vectorize`` maps the per-task work with ``torch.func.vmap`` (chunked
    by ``chunk_size``); ``False`` runs the per-task loop.
    """

    inner_lr: float = 0.01
    inner_steps: int = 1
    adapt: Adapt = "all"
    vectorize: bool = True
    chunk_size: int | None = None

    min_inner_steps: ClassVar[int] = 1

    def __post_init__(self) -> None:
        name = f"algorithm({type(self).__name__})"
        check_positive(name, "inner_lr", self.inner_lr)
        if not isinstance(self.inner_steps, int) or self.inner_steps < self.min_inner_steps:
            raise ValueError(f"{name}.inner_steps={self.inner_steps!r}: must be an integer >= {self.min_inner_steps}")
        if isinstance(self.adapt, list):
            object.__setattr__(self, "adapt", tuple(self.adapt))
        if isinstance(self.adapt, str) and self.adapt not in ("all", "head"):
            raise ValueError(f"{name}.adapt={self.adapt!r}: expected 'all', 'head' or a list of parameter names")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"{name}.chunk_size={self.chunk_size!r}: must be >= 1 or null")

    # -- the interface -------------------------------------------------------------------
    def init_params(self, model: nn.Module) -> Params:
        return model_params(model)

    def meta_gradient(self, model: nn.Module, params: Params, batch: EpisodeBatch) -> MetaGradient:
        params = {k: v.detach() for k, v in params.items()}
        names = adapted_names(params, self.adapt)
        fn = self.task_fn(model, params, names, batch.loss)  # type: ignore[arg-type]
        grads, metrics = run_per_task(fn, batch, self.vectorize, self.chunk_size)
        return MetaGradient(grads, batch.n_tasks, {k: float(v) for k, v in metrics.items()})

    def task_fn(self, model: nn.Module, params: Params, names: tuple[str, ...],
                kind: LossKind) -> Callable[..., tuple[dict[str, Tensor], dict[str, Tensor]]]:
        raise NotImplementedError

    # -- the inner loop --------------------------------------------------------------------
    def inner_objective(self, c: Chunk) -> Callable[[Params], Tensor] | None:
        """The per-task losses the inner loop descends on chunk ``c``; ``None`` is the plain
        support loss (iMAML adds a proximal term)."""
        return None

    # -- prediction ------------------------------------------------------------------------
    def predict(self, model: nn.Module, params: Params, batch: EpisodeBatch, steps: int | None = None) -> Tensor:
        """Model outputs ``[T, Q, ...]`` on each task's query inputs after ``steps`` inner steps
        on its support set (default ``inner_steps``): what :meth:`evaluate` scores at that step."""
        steps = self.inner_steps if steps is None else steps
        names = adapted_names(params, self.adapt)
        outs = []
        for part in slices(batch, self.vectorize, self.chunk_size):
            c = Chunk.make(model, params, names, part, self.vectorize)
            fast, _ = inner_sgd(c, steps, self.inner_lr, False, self.inner_objective(c)) if steps else (c.start, None)
            with torch.no_grad():
                outs.append(c.outputs(fast, part.query_x))
        return torch.cat(outs)

    # -- evaluation ------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, params: Params, batch: EpisodeBatch,
                 steps: int | None = None) -> Evaluation:
        """Query loss/accuracy after 0, 1, ..., ``steps`` inner steps (default ``inner_steps``)."""
        steps = self.inner_steps if steps is None else steps
        if steps < 0:
            raise ValueError(f"evaluation steps={steps}: must be >= 0")
        names = adapted_names(params, self.adapt)
        total: dict[str, Tensor] | None = None
        for part in slices(batch, self.vectorize, self.chunk_size):
            c = Chunk.make(model, params, names, part, self.vectorize)
            objective, fast, losses, accs = self.inner_objective(c), c.start, [], []
            for s in range(steps + 1):
                with torch.no_grad():
                    loss, acc = c.query(fast)
                losses.append(loss)
                accs.append(acc)
                if s < steps:
                    fast, _ = inner_sgd(c, 1, self.inner_lr, False, objective, start=fast)
            loss_t, acc_t = torch.stack(losses, 1), torch.stack(accs, 1)  # [T, steps + 1]
            sums = {"loss": loss_t.sum(0), "acc": acc_t.sum(0), "loss_sq": (loss_t ** 2).sum(0),
                    "acc_sq": (acc_t ** 2).sum(0)}
            total = sums if total is None else {k: total[k] + sums[k] for k in sums}
        if total is None:
            raise ValueError("EpisodeBatch holds no tasks")
        return evaluation_from_sums(total, batch.n_tasks)

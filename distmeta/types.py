"""The one vocabulary every room shares: parameters, episode batches, meta-gradients.

Data flows one way: ``data`` -> ``tasks`` (:class:`EpisodeBatch`) -> ``algorithms``
(:class:`MetaGradient`) -> ``runtime`` (sum, step) -> ``tracking``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

Params = dict[str, Tensor]
"""torch.func style parameters: name -> tensor."""

LossKind = str
"""A task loss: ``mse``, ``cross_entropy``, or an import path ``package.module:function``
(:mod:`distmeta.losses`)."""
LOSS_KINDS: tuple[str, ...] = ("mse", "cross_entropy")


@dataclass(frozen=True)
class EpisodeBatch:
    """``T`` tasks stacked on dim 0.

    ``support_x``: ``[T, S, ...]``; ``support_y``: ``[T, S]`` class labels (int64) or
    ``[T, S, out]`` regression targets; likewise ``query_x`` / ``query_y`` with ``Q`` points.
    ``loss`` is the task family's loss (``mse``, ``cross_entropy`` or an import path); when
    omitted it is taken from the targets' dtype (integer labels -> cross-entropy). ``classes``:
    classification's classes per task (the way) where the source knows it, so that no one
    reads it off the labels (a host synchronisation on a GPU); ``None``: the labels say.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    loss: LossKind | None = None
    classes: int | None = None

    def __post_init__(self) -> None:
        if self.loss is None:
            kind = "mse" if self.support_y.is_floating_point() else "cross_entropy"
            object.__setattr__(self, "loss", kind)
        if self.loss not in LOSS_KINDS and ":" not in str(self.loss):
            raise ValueError(f"EpisodeBatch.loss={self.loss!r}: expected one of {LOSS_KINDS} or an import path "
                             "package.module:function")
        self._check_shapes()
        self._check_finite()

    @property
    def n_tasks(self) -> int:
        return int(self.support_x.shape[0])

    def _check_shapes(self) -> None:
        sx, sy, qx, qy = self.support_x, self.support_y, self.query_x, self.query_y
        for name, t in (("support_x", sx), ("support_y", sy), ("query_x", qx), ("query_y", qy)):
            if t.dim() < 2:
                raise ValueError(f"EpisodeBatch.{name} has shape {tuple(t.shape)}: expected [T, n, ...]")
        if len({sx.shape[0], sy.shape[0], qx.shape[0], qy.shape[0]}) != 1:
            raise ValueError(
                "EpisodeBatch: task dimension differs: support_x "
                f"{tuple(sx.shape)}, support_y {tuple(sy.shape)}, query_x {tuple(qx.shape)}, "
                f"query_y {tuple(qy.shape)}"
            )
        if sx.shape[:2] != sy.shape[:2]:
            raise ValueError(f"EpisodeBatch: support_x {tuple(sx.shape)} and support_y {tuple(sy.shape)} disagree on [T, S]")
        if qx.shape[:2] != qy.shape[:2]:
            raise ValueError(f"EpisodeBatch: query_x {tuple(qx.shape)} and query_y {tuple(qy.shape)} disagree on [T, Q]")
        if sx.shape[2:] != qx.shape[2:]:
            raise ValueError(f"EpisodeBatch: support_x {tuple(sx.shape)} and query_x {tuple(qx.shape)} have different input shapes")
        if sy.shape[2:] != qy.shape[2:]:
            raise ValueError(f"EpisodeBatch: support_y {tuple(sy.shape)} and query_y {tuple(qy.shape)} have different target shapes")
        if self.loss == "cross_entropy" and (sy.is_floating_point() or qy.is_floating_point()):
            raise ValueError("EpisodeBatch: cross_entropy needs integer class labels in support_y and query_y")

    def _check_finite(self) -> None:
        for name in ("support_x", "support_y", "query_x", "query_y"):
            t = getattr(self, name)
            # a sum is finite iff every term is (barring overflow): 20x cheaper than isfinite().all()
            if not t.is_floating_point() or t.is_meta or bool(torch.isfinite(t.sum(dtype=torch.float64))):
                continue
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                raise ValueError(f"EpisodeBatch.{name} holds {bad} non-finite value(s) (NaN or inf)")

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> EpisodeBatch:
        """Move to ``device``; cast floating tensors (inputs, regression targets) to ``dtype``."""

        def move(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        cast = dtype is not None and any(t.is_floating_point() and t.dtype != dtype for t in self._arrays())
        return self._derived(*(move(t) for t in self._arrays()), recheck=cast)

    @classmethod
    def cat(cls, batches: list[EpisodeBatch]) -> EpisodeBatch:
        """The tasks of ``batches`` (of one loss and shape) one after the other."""
        if len(batches) == 1:
            return batches[0]
        return batches[0]._derived(*(torch.cat(parts) for parts in zip(*(b._arrays() for b in batches), strict=True)))

    def layout(self) -> tuple[object, ...]:
        """What batches must share to be one batch: the loss, shapes (tasks aside), dtypes, device."""
        return (self.loss, self.classes, self.support_x.device, *((t.shape[1:], t.dtype) for t in
                (self.support_x, self.support_y, self.query_x, self.query_y)))

    def slice(self, start: int, stop: int) -> EpisodeBatch:
        """Tasks ``start:stop`` as a batch of their own."""
        return self._derived(*(t[start:stop] for t in self._arrays()))

    def _arrays(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.support_x, self.support_y, self.query_x, self.query_y

    def _derived(self, *arrays: Tensor, recheck: bool = False) -> EpisodeBatch:
        """A batch of tensors taken from this checked one's (a slice, a move, a concatenation
        of checked batches): the shapes are checked again, the values only when ``recheck`` (a
        cast, which may overflow): reading them back is a host synchronisation on a GPU."""
        if recheck:
            return EpisodeBatch(*arrays, self.loss, self.classes)
        out = object.__new__(EpisodeBatch)
        for name, value in zip(("support_x", "support_y", "query_x", "query_y", "loss", "classes"),
                               (*arrays, self.loss, self.classes), strict=True):
            object.__setattr__(out, name, value)
        out._check_shapes()
        return out


@dataclass(frozen=True)
class EpisodeGroups:
    """Tasks of different sizes (variable way and shot, as Meta-Dataset's episodes): groups of
    same-layout tasks, each one :class:`EpisodeBatch`. The engine computes group by group (a
    group is vectorised like any batch) and sums in group order, so a logical shard's sums are
    a function of its tasks alone. :meth:`of` groups tasks by layout in order of first
    appearance."""

    groups: tuple[EpisodeBatch, ...]

    def __post_init__(self) -> None:
        if not self.groups:
            raise ValueError("EpisodeGroups: no tasks")
        if len({g.loss for g in self.groups}) != 1:
            raise ValueError(f"EpisodeGroups: groups of different losses {sorted({str(g.loss) for g in self.groups})}")

    @classmethod
    def of(cls, batches: list[EpisodeBatch]) -> EpisodeGroups:
        by: dict[tuple[object, ...], list[EpisodeBatch]] = {}
        for b in batches:
            by.setdefault(b.layout(), []).append(b)
        return cls(tuple(EpisodeBatch.cat(parts) for parts in by.values()))

    @property
    def n_tasks(self) -> int:
        return sum(g.n_tasks for g in self.groups)

    @property
    def loss(self) -> LossKind | None:
        return self.groups[0].loss

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> EpisodeGroups:
        return EpisodeGroups(tuple(g.to(device, dtype) for g in self.groups))

    def layout(self) -> tuple[object, ...]:
        return ("groups", *(g.layout() for g in self.groups))


Episodes = EpisodeBatch | EpisodeGroups
"""What a task source gives for a step: one batch of same-sized tasks, or groups of them."""


@dataclass(frozen=True)
class MetaGradient:
    """Per-task meta-gradients and metrics, SUMMED over the batch's tasks.

    Sums (not means) add exactly across workers; the parameter server divides by the total
    ``n_tasks`` once. Metrics: ``query_loss`` (the outer objective), ``query_loss_before``,
    ``support_loss_before``/``support_loss_after``, ``query_acc`` (classification) ...
    """

    grads: Params
    n_tasks: int
    metrics: dict[str, float] = field(default_factory=dict)


class MetaAlgorithm(Protocol):
    """A meta-gradient rule: a frozen dataclass of its own hyper-parameters."""

    def init_params(self, model: nn.Module) -> Params:
        """The meta-parameters: the model's, plus any the rule owns (e.g. a learnable ridge λ)."""
        ...

    def meta_gradient(self, model: nn.Module, params: Params, batch: EpisodeBatch, step: int = 0,
                      metrics: bool = True) -> MetaGradient:
        """Grads and metrics SUMMED over the batch's tasks; ``step`` is the outer step;
        ``metrics=False``: no metrics needed (a step that is not logged), the same grads."""
        ...

    def evaluate(self, model: nn.Module, params: Params, batch: EpisodeBatch, steps: int | None = None) -> Any:
        """Query loss/accuracy after 0..``steps`` inner steps, summed over tasks (an ``Evaluation``)."""
        ...

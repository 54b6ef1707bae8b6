"""Per-task maths in torch.func style (params as dicts, no module clones), for ERM and
R2-D2. The rules with an inner loop, and every rule's evaluation curve, run on
:mod:`distmeta.algorithms.chunk`.

Every function here works on ONE task (unbatched tensors) so that it composes with
``torch.func.vmap`` over the task dimension; :func:`run_per_task` runs it either vectorised
or as a plain per-task loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from torch import Tensor, nn
from torch.func import functional_call, vmap

from distmeta.losses import task_loss
from distmeta.models.base import HEAD_PREFIX
from distmeta.types import EpisodeBatch, LossKind, Params

RULE_PREFIX = "rule."
"""Meta-parameters owned by a rule rather than the model (e.g. R2-D2's learnable λ)."""

Adapt = str | tuple[str, ...]


def forward(model: nn.Module, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """``model(x)`` with ``params`` (rule-owned entries are ignored)."""
    own = {k: v for k, v in params.items() if not k.startswith(RULE_PREFIX)}
    return functional_call(model, own, (x,))


def loss_and_acc(model: nn.Module, kind: LossKind, params: Mapping[str, Tensor],
                 x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    return task_loss(kind, forward(model, params, x), y)


def adapted_names(params: Mapping[str, Tensor], adapt: Adapt) -> tuple[str, ...]:
    """Names that adapt in the inner loop: ``all``, ``head`` (ANIL) or an explicit list."""
    model_names = [k for k in params if not k.startswith(RULE_PREFIX)]
    if adapt == "all":
        return tuple(model_names)
    if adapt == "head":
        names = [k for k in model_names if k.startswith(HEAD_PREFIX)]
        if not names:
            raise ValueError("algorithm.adapt='head' but the model has no parameters under 'head.'")
        return tuple(names)
    missing = [n for n in adapt if n not in params]
    if missing:
        raise ValueError(f"algorithm.adapt names unknown parameter(s) {missing}; the model has {model_names}")
    return tuple(adapt)


def split(params: Mapping[str, Tensor], names: Sequence[str]) -> tuple[Params, Params]:
    """(adapted, frozen) parts of ``params``."""
    chosen = set(names)
    return ({k: v for k, v in params.items() if k in chosen},
            {k: v for k, v in params.items() if k not in chosen})


TaskFn = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[dict[str, Tensor], dict[str, Tensor]]]


def run_per_task(fn: TaskFn, batch: EpisodeBatch, vectorize: bool,
                 chunk_size: int | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Run ``fn(support_x, support_y, query_x, query_y)`` on every task and SUM its outputs.

    ``vectorize=True`` maps over the task dimension with ``torch.func.vmap`` (in chunks of
    ``chunk_size`` tasks when given); ``False`` is a plain loop over tasks.
    """
    args = (batch.support_x, batch.support_y, batch.query_x, batch.query_y)
    if vectorize:
        outs = vmap(fn, chunk_size=chunk_size)(*args)
        return tuple({k: v.sum(0) for k, v in out.items()} for out in outs)  # type: ignore[return-value]
    total: tuple[dict[str, Tensor], dict[str, Tensor]] | None = None
    for t in range(batch.n_tasks):
        outs = fn(*(a[t] for a in args))
        total = outs if total is None else tuple(
            {k: acc[k] + out[k] for k in acc} for acc, out in zip(total, outs, strict=True))  # type: ignore[assignment]
    if total is None:
        raise ValueError("EpisodeBatch holds no tasks")
    return total

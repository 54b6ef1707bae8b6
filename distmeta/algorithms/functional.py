"""Parameters as dicts, torch.func style: the model's forward with a given set of parameters,
which names adapt in the inner loop, and the split into adapted and frozen parameters.
Rule-owned meta-parameters are named ``rule.*`` and never reach the model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn
from torch.func import functional_call

from distmeta.models.base import HEAD_PREFIX
from distmeta.types import Params

RULE_PREFIX = "rule."
"""Meta-parameters owned by a rule rather than the model (e.g. R2-D2's learnable λ)."""

Adapt = str | tuple[str, ...]


def forward(model: nn.Module, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """``model(x)`` with ``params`` (rule-owned entries are ignored)."""
    own = {k: v for k, v in params.items() if not k.startswith(RULE_PREFIX)}
    return functional_call(model, own, (x,))


def adapted_names(params: Mapping[str, Tensor], adapt: Adapt, head: str = HEAD_PREFIX) -> tuple[str, ...]:
    """Names that adapt in the inner loop: ``all``, ``head`` (ANIL: the names under ``head``,
    the model's head prefix) or an explicit list."""
    model_names = [k for k in params if not k.startswith(RULE_PREFIX)]
    if adapt == "all":
        return tuple(model_names)
    if adapt == "head":
        names = [k for k in model_names if k.startswith(head)]
        if not names:
            raise ValueError(f"algorithm.adapt='head' but the model has no parameters under {head!r}; set "
                             f"model.head to its head module (its parameters are {model_names[:6]}...)")
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

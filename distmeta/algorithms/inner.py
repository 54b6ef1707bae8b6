"""Inner updates as values, in the style of optax's ``GradientTransformation``: an update owns
its meta-parameters (``init_params``), starts a typed, frozen state for one inner loop
(``init``) and maps the support gradients to the next fast parameters (``update``).

SGD (Finn et al. 2017, Eq. 1: phi_{k+1} = phi_k - alpha grad L_support(phi_k)) is the default
of every adapting rule. The learned updates are in their rules' modules: Meta-SGD's
per-parameter rates (:mod:`distmeta.algorithms.metasgd`), Meta-KFO's Kronecker factors
(:mod:`distmeta.algorithms.kfo`), MAML++'s LSLR and per-step BatchNorm weights
(:mod:`distmeta.algorithms.maml_plus_plus`). Their meta-parameters (``rule.*``) sit in
``params`` beside the model's, and ``update`` reads them from ``c.theta``, so whatever
outer gradient goes through the loop reaches them too.

:class:`InnerLoop` is one inner loop: an update, a number of steps and the per-task loss it
descends; the meta-gradient, evaluation and prediction all run it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from distmeta.algorithms.chunk import Chunk
from distmeta.types import Params


@dataclass(frozen=True)
class InnerState:
    """What an inner update carries from one step of a loop to the next: ``k``, the index of
    the next step. Updates with more state subclass it (a frozen dataclass, passed explicitly)."""

    k: int = 0

    def next(self) -> InnerState:
        return dataclasses.replace(self, k=self.k + 1)


class InnerUpdate(Protocol):
    """An inner update: its meta-parameters, its state, and one step."""

    def init_params(self, model: nn.Module, params: Params, adapted: tuple[str, ...]) -> Params:
        """The meta-parameters it owns (named ``rule.*``), added to ``params`` at init."""
        ...

    def init(self, c: Chunk) -> InnerState:
        """The state at the start of an inner loop on chunk ``c``."""
        ...

    def update(self, c: Chunk, fast: Params, grads: Params, state: InnerState) -> tuple[Params, InnerState]:
        """The fast parameters after step ``state.k`` from the support gradients ``grads``."""
        ...


@dataclass(frozen=True)
class SGD:
    """``fast - lr * grads``: no meta-parameters, no state but the step index."""

    lr: float

    def init_params(self, model: nn.Module, params: Params, adapted: tuple[str, ...]) -> Params:
        return {}

    def init(self, c: Chunk) -> InnerState:
        return InnerState()

    def update(self, c: Chunk, fast: Params, grads: Params, state: InnerState) -> tuple[Params, InnerState]:
        return {n: fast[n] - self.lr * grads[n] for n in fast}, state.next()


@dataclass
class InnerStep:
    """One step of the inner loop: the parameters before and after, the loss at ``before``
    (per task) and its gradients."""

    k: int
    before: Params
    loss: Tensor
    grads: Params
    after: Params


@dataclass(frozen=True)
class InnerLoop:
    """``steps`` steps of ``update`` per task on ``objective`` (per-task losses ``[T]`` of the
    fast parameters; ``None`` is the support loss, iMAML adds a proximal term)."""

    update: InnerUpdate
    steps: int
    objective: Callable[[Params], Tensor] | None = None

    def loss(self, c: Chunk) -> Callable[[Params], Tensor]:
        return self.objective or c.support

    def path(self, c: Chunk, second_order: bool, start: Params | None = None) -> Iterator[InnerStep]:
        """The steps from ``start`` (default ``c.start``). With ``second_order`` they stay on
        the graph (MAML), otherwise every step is detached."""
        loss_fn = self.loss(c)
        fast, state = (c.start if start is None else start), self.update.init(c)
        for k in range(self.steps):
            loss = loss_fn(fast)
            grads = dict(zip(fast, torch.autograd.grad(loss.sum(), list(fast.values()), create_graph=second_order),
                             strict=True))
            after, state = self.update.update(c, fast, grads, state)
            if not second_order:
                after = {n: v.detach().requires_grad_(True) for n, v in after.items()}
            yield InnerStep(k, fast, loss, grads, after)
            fast = after

    def run(self, c: Chunk, second_order: bool) -> tuple[Params, Tensor]:
        """The adapted parameters after all steps, and the first inner loss."""
        fast, first = c.start, None
        for step in self.path(c, second_order):
            first = step.loss.detach() if first is None else first
            fast = step.after
        return fast, self.first_loss(c, fast, first)

    def first_loss(self, c: Chunk, fast: Params, first: Tensor | None) -> Tensor:
        """The first inner loss, or for a loop of no steps the loss at ``fast``."""
        if first is not None:
            return first
        with torch.no_grad():
            return self.loss(c)(fast)

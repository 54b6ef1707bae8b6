"""The exact second-order outer gradient in memory of one inner step: checkpointed reverse
mode through the unrolled loop (Griewank and Walther 2000, "Algorithm 799: revolve"; the
storage/recompute trade of Chen et al. 2016 applied to the inner loop), for any inner update.

With phi_{k+1} = u_k(phi_k, g(phi_k)), g the support gradient and u_k the inner update (SGD:
phi_k - alpha g), the outer gradient is v_0 = J_0^T ... J_{K-1}^T grad L_query(phi_K),
J_k = d phi_{k+1} / d phi_k (SGD: I - alpha H(phi_k)). Plain second order keeps the graph of
all K steps (activations and their double-backward graph, K times). Here the inner loop
first runs without a graph and keeps only the iterates phi_0 .. phi_{K-1} (parameters, not
activations) and the update's states; the reverse sweep then rebuilds ONE step's graph at a
time, from its stored iterate, and pulls the adjoint back through it:
v_k = vjp(phi_{k+1}(phi_k), v_{k+1}). Parameters that do not adapt (the body under
``adapt: head``, the update's own meta-parameters) collect their share of every step's
vector-Jacobian product. With MAML++'s multi-step loss (weights w_k on L_query(phi_{k+1}))
the sweep adds w_{k-1} grad L_query(phi_k) to the adjoint at phi_k, rebuilt like a step.

Every sum is made in the order autograd makes it in the plain version (each iterate's and
each frozen parameter's contributions in reverse order of their creation: first the later
steps, then the query at that iterate), so the gradient is the plain one bit for bit where
each parameter is used once per forward (tests: ``torch.equal`` in float64). Memory holds
one step's activations plus K copies of the adapted parameters; time adds one forward and
backward per step (and, with the multi-step loss, one query forward and backward per step).
The random state before each step and each query is kept and restored for its rebuild (as
``torch.utils.checkpoint`` does), so DropBlock draws the same blocks twice. The update's
state is replayed as a constant of each step, so an update whose state carries more than the
step index (a momentum, say, which depends on the path) is refused rather than given a wrong
gradient.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from distmeta.algorithms.chunk import Chunk, Sums, adaptation_metrics, gradients
from distmeta.algorithms.inner import InnerLoop, InnerState
from distmeta.algorithms.outer import Weights
from distmeta.types import Params


def _leaves(params: Params) -> Params:
    return {k: v.detach().requires_grad_(True) for k, v in params.items()}


class _Rng:
    """The random state before each inner step and query, so a rebuild draws what the first
    pass drew (DropBlock, dropout): CPU and, for CUDA parameters, their device's generator."""

    def __init__(self, like: Tensor) -> None:
        self.devices = [like.device] if like.device.type == "cuda" else []
        self.states: dict[tuple[str, int], tuple[Tensor, list[Tensor]]] = {}

    def save(self, key: tuple[str, int]) -> None:
        self.states[key] = (torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in self.devices])

    def replay(self, key: tuple[str, int]):
        cpu, cuda = self.states[key]
        fork = torch.random.fork_rng(devices=self.devices)
        fork.__enter__()
        torch.set_rng_state(cpu)
        for d, state in zip(self.devices, cuda, strict=True):
            torch.cuda.set_rng_state(state, d)
        return fork


def check_replayable(state: InnerState) -> None:
    """The reverse sweep rebuilds each step from its iterate and its stored state; a state
    that carries more than the step index depends on the path, and is refused."""
    carried = [f.name for f in dataclasses.fields(state) if f.name != "k" and getattr(state, f.name) is not None]
    if carried:
        raise ValueError(f"algorithm.checkpoint_inner: the inner update's state carries {carried} across steps; "
                         "checkpointing replays each step from its iterate alone, so it needs an update whose "
                         "state is only the step index (set algorithm.checkpoint_inner=false)")


@dataclass
class _Pass:
    """What the first pass keeps: the iterates phi_0 .. phi_{K-1}, the update's state at each
    step, phi_K and its query, the first inner loss, the random states."""

    path: list[Params]
    states: list[InnerState]
    fast: Params
    query: tuple[Tensor, Tensor]
    first: Tensor
    rng: _Rng


@dataclass(frozen=True)
class Checkpointed:
    """Second order through the loop, one step's graph at a time; ``weights``: the
    multi-step loss, as :class:`~distmeta.algorithms.outer.SecondOrder`."""

    weights: Weights | None = None

    def gradient(self, c: Chunk, loop: InnerLoop) -> Sums:
        run = self.forward(c, loop)
        direct = gradients(self.weighted(loop.steps - 1, run.query[0]), {**run.fast, **c.frozen})
        adjoint = {k: direct[k] for k in run.fast}
        frozen = {k: direct[k] for k in c.frozen}
        for k in reversed(range(loop.steps)):
            phi = _leaves(run.path[k])
            pulled, extra = self.pull_step(c, loop, run, k, phi, adjoint)
            frozen = {n: frozen[n] + extra[n] if n in extra else frozen[n] for n in frozen}
            adjoint = pulled
            if self.weights is not None and k > 0:
                on_phi = self.query_gradient(c, run, k, phi)
                adjoint = {n: adjoint[n] + on_phi[n] for n in adjoint}
                frozen = {n: frozen[n] + on_phi[n] for n in frozen}
        metrics = adaptation_metrics(c, run.fast, run.first, (run.query[0].detach(), run.query[1].detach()))
        return c.task_sum(adjoint) | frozen, metrics

    def weighted(self, k: int, query_loss: Tensor) -> Tensor:
        """The outer loss's term of the query after step ``k``."""
        return query_loss.sum() if self.weights is None else self.weights[k] * query_loss.sum()

    def forward(self, c: Chunk, loop: InnerLoop) -> _Pass:
        """The inner loop without a graph, keeping the iterates and random states (and, with
        the multi-step loss, scoring each intermediate query as the plain loop does)."""
        loss_fn, path, states = loop.loss(c), [], []
        fast, first = _leaves(c.start), None
        rng, state = _Rng(next(iter(c.theta.values()))), loop.update.init(c)
        check_replayable(state)
        for k in range(loop.steps):
            rng.save(("step", k))
            loss = loss_fn(fast)
            first = loss.detach() if first is None else first
            grads = dict(zip(fast, torch.autograd.grad(loss.sum(), list(fast.values())), strict=True))
            torch.clear_autocast_cache()  # under bf16 autocast: no cast copy of each stored iterate
            path.append(fast)
            states.append(state)
            with torch.no_grad():
                after, state = loop.update.update(c, fast, grads, state)
            fast = _leaves(after)
            if self.weights is not None and k < loop.steps - 1:
                rng.save(("query", k + 1))
                with torch.no_grad():
                    c.query(fast)  # the plain loop scores it here: draw what it draws
        return _Pass(path, states, fast, c.query(fast), loop.first_loss(c, fast, first), rng)

    def pull_step(self, c: Chunk, loop: InnerLoop, run: _Pass, k: int, phi: Params,
                  adjoint: Params) -> tuple[Params, Params]:
        """Step ``k`` rebuilt from its iterate ``phi``: the adjoint pulled back to phi_k, and
        the frozen parameters' share (only those the step uses)."""
        fork = run.rng.replay(("step", k))
        try:
            g = torch.autograd.grad(loop.loss(c)(phi).sum(), list(phi.values()), create_graph=True)
        finally:
            fork.__exit__(None, None, None)
            torch.clear_autocast_cache()
        nxt, _ = loop.update.update(c, phi, dict(zip(phi, g, strict=True)), run.states[k])
        pulled = torch.autograd.grad([nxt[n] for n in adjoint], [*phi.values(), *c.frozen.values()],
                                     grad_outputs=list(adjoint.values()), allow_unused=True)
        back = {n: torch.zeros_like(phi[n]) if v is None else v for n, v in zip(phi, pulled[:len(phi)], strict=True)}
        extra = {n: v for n, v in zip(c.frozen, pulled[len(phi):], strict=True) if v is not None}
        return back, extra

    def query_gradient(self, c: Chunk, run: _Pass, k: int, phi: Params) -> Params:
        """The multi-step loss's term at phi_k (the query after step k - 1), differentiated at
        phi_k (per task) and at the frozen parameters, rebuilt with its random state."""
        fork = run.rng.replay(("query", k))
        try:
            loss = c.query(phi)[0]
        finally:
            fork.__exit__(None, None, None)
        return gradients(self.weighted(k - 1, loss), {**phi, **c.frozen})

"""MAML's exact meta-gradient in memory of one inner step: checkpointed reverse mode through
the unrolled loop (Griewank and Walther 2000, "Algorithm 799: revolve"; the storage/recompute
trade of Chen et al. 2016 applied to the inner loop).

With phi_{k+1} = phi_k - alpha * g(phi_k), g the support gradient, the outer gradient is
v_0 = J_0^T ... J_{K-1}^T grad L_query(phi_K), J_k = I - alpha * H(phi_k). Plain MAML keeps the
graph of all K steps (activations and their double-backward graph, K times). Here the inner
loop first runs without a graph and keeps only the iterates phi_0 .. phi_{K-1} (parameters,
not activations); the reverse sweep then rebuilds ONE step's graph at a time, from its
stored iterate, and pulls the adjoint back through it: v_k = vjp(phi_{k+1}(phi_k), v_{k+1}).
Parameters that do not adapt (the body, under ``adapt: head``) collect their share of every
step's vector-Jacobian product. The result is the same gradient, computed in another order
(tests: relative error <= 1e-12 in float64); memory holds one step's activations plus K
copies of the adapted parameters; time adds one forward and backward per step. The random
state before each step is kept and restored for its rebuild (as ``torch.utils.checkpoint``
does), so DropBlock draws the same blocks twice.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from distmeta.algorithms.chunk import Chunk, InnerUpdate, gradients
from distmeta.types import Params


def _leaves(params: Params) -> Params:
    return {k: v.detach().requires_grad_(True) for k, v in params.items()}


class _Rng:
    """The random state before each inner step, so a rebuilt step draws what the first pass
    drew (DropBlock, dropout): CPU and, for CUDA parameters, their device's generator."""

    def __init__(self, like: Tensor) -> None:
        self.devices = [like.device] if like.device.type == "cuda" else []
        self.states: list[tuple[Tensor, list[Tensor]]] = []

    def save(self) -> None:
        self.states.append((torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in self.devices]))

    def replay(self, k: int):
        cpu, cuda = self.states[k]
        fork = torch.random.fork_rng(devices=self.devices)
        fork.__enter__()
        torch.set_rng_state(cpu)
        for d, state in zip(self.devices, cuda, strict=True):
            torch.cuda.set_rng_state(state, d)
        return fork


def checkpointed_unroll(c: Chunk, update: InnerUpdate, steps: int,
                        objective: Callable[[Params], Tensor] | None = None,
                        ) -> tuple[dict[str, Tensor], Params, Tensor, tuple[Tensor, Tensor]]:
    """``(outer gradient w.r.t. c.theta (task sums), phi_K, first inner loss, (query loss, acc))``
    for the inner loop of ``update`` (any inner step: its meta-parameters, in ``c.frozen``,
    collect their gradient in the same sweep). The inner state must not depend on the path."""
    loss_fn = objective or c.support
    path: list[Params] = []
    fast, first = _leaves(c.start), None
    rng, state = _Rng(next(iter(c.theta.values()))), update.inner_state(c)
    for k in range(steps):
        rng.save()
        loss = loss_fn(fast)
        first = loss.detach() if first is None else first
        grads = dict(zip(fast, torch.autograd.grad(loss.sum(), list(fast.values())), strict=True))
        torch.clear_autocast_cache()  # under bf16 autocast: no cast copy of each stored iterate
        path.append(fast)
        with torch.no_grad():
            fast = _leaves(update.inner_step(c, fast, grads, k, state)[0])
    q_loss, q_acc = c.query(fast)
    direct = gradients(q_loss.sum(), {**fast, **c.frozen})
    adjoint = {k: direct[k] for k in fast}
    frozen = {k: direct[k] for k in c.frozen}
    for k in reversed(range(steps)):
        phi, fork = _leaves(path[k]), rng.replay(k)
        try:
            g = torch.autograd.grad(loss_fn(phi).sum(), list(phi.values()), create_graph=True)
        finally:
            fork.__exit__(None, None, None)
            torch.clear_autocast_cache()
        nxt = list(update.inner_step(c, phi, dict(zip(phi, g, strict=True)), k, state)[0].values())
        pulled = torch.autograd.grad(nxt, [*phi.values(), *c.frozen.values()], grad_outputs=list(adjoint.values()),
                                     allow_unused=True)
        adjoint = {n: torch.zeros_like(phi[n]) if g is None else g for n, g in zip(phi, pulled[:len(phi)], strict=True)}
        for k, extra in zip(c.frozen, pulled[len(phi):], strict=True):
            if extra is not None:
                frozen[k] = frozen[k] + extra
    if first is None:
        with torch.no_grad():
            first = loss_fn(fast)
    grads = c.task_sum(adjoint) | frozen
    return grads, {k: v.detach() for k, v in fast.items()}, first, (q_loss.detach(), q_acc.detach())

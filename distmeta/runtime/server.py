"""The parameter server: meta-parameters, the outer optimiser, the step counter.

A plain class; the driver makes it a restartable Ray actor at the call site. ``apply`` adds
the workers' meta-gradient SUMS up the fixed reduction tree (:mod:`distmeta.runtime.tree`, so
the result does not depend on how many workers computed them or how they were dealt), divides
by the total task count and takes one optimiser step. It returns the step's stats and the next
step's state ``(step + 1, params)``, which the driver hands straight to the workers' next
``compute``: no driver round trip sits between two steps. A step that was already applied is
rejected, never applied twice; a non-finite meta-gradient skips the update (counted) and
leaves the parameters untouched.

With ``runtime.server_shards: K > 1`` each of K servers owns a fixed part of the parameters
(:mod:`distmeta.runtime.partition`) and the update is two calls: ``reduce`` (sum this part's
blocks, return its per-tensor gradient norms) and ``update`` (given every part's norms: the
global norm, the same clip and skip decision on every shard, this part's optimiser step).
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import torch

from distmeta import plugins
from distmeta.config import RunConfig, validate
from distmeta.errors import CheckpointError, NotFound
from distmeta.models import zero_head
from distmeta.rundir.checkpoint import (
    CheckpointWriter,
    clean_temporary,
    load_checkpoint,
    newest_readable,
)
from distmeta.rundir.model_init import initial_params
from distmeta.rundir.storage import RunDir
from distmeta.runtime.partition import partition
from distmeta.runtime.tree import Block, combine
from distmeta.types import Params

log = logging.getLogger(__name__)

State = tuple[int, Params]
"""(step, params): what a worker computes step ``step`` from."""


class StaleStepError(RuntimeError):
    """``apply`` was called for a step other than the server's current one."""


def lr_at(cfg: RunConfig, step: int) -> float:
    """Outer learning rate at ``step``: linear warm-up to the peak (``outer.lr``, scaled for
    the meta-batch by ``outer.lr_scaling``), then constant, cosine decay, or the staircase
    exponential decay of Meta-Dataset's trainer (Triantafillou et al. 2020:
    ``decay_rate ** floor(steps since warm-up / decay_every)``)."""
    outer = cfg.outer
    factor = min(1.0, (step + 1) / outer.warmup_steps) if outer.warmup_steps else 1.0
    if outer.schedule == "cosine":
        progress = min(1.0, max(0, step - outer.warmup_steps) / max(1, outer.steps - outer.warmup_steps))
        factor *= 0.5 * (1.0 + math.cos(math.pi * progress))
    elif outer.schedule == "staircase":  # outer.decay_every is set: the config checks it
        factor *= outer.decay_rate ** (max(0, step - outer.warmup_steps) // outer.decay_every)
    return outer.peak_lr(cfg.runtime.meta_batch) * factor


def server_partition(params: Params, shards: int) -> list[list[str]]:
    """Which parameter names each of ``shards`` servers owns (by the parameters' sizes)."""
    return partition({k: v.numel() for k, v in params.items()}, shards)


def tree_total(block_lists: tuple[list[Block], ...], n_shards: int) -> tuple[Params, int, int]:
    """(gradient sum over all tasks, task count, floats received) from the blocks sent."""
    blocks = [b for blocks in block_lists for b in blocks]
    received = sum(g.numel() for b in blocks for g in b[2].values())
    (_, _, total, n_tasks), = combine(blocks, n_shards)
    return total, n_tasks, received


def global_norm(norms: dict[str, torch.Tensor], order: list[str]) -> float:
    """The norm of all parameters' gradients from their per-tensor norms, in the model's
    order: the same number whatever the server sharding."""
    return float(torch.linalg.vector_norm(torch.stack([norms[k] for k in order])))


class ParameterServer:
    def __init__(self, config: dict[str, Any], run_dir: str, shard: int = 0,
                 given: dict[str, dict[str, Any]] | None = None) -> None:
        plugins.accept(given)
        self.cfg = validate(config)
        torch.set_num_threads(self.cfg.runtime.threads_per_worker)
        self.run_dir = RunDir(run_dir)
        self.shard, self.shards = shard, self.cfg.runtime.server_shards
        full = initial_params(self.cfg)
        self.order = list(full)
        names = server_partition(full, self.shards)[shard]
        self.params = {k: full[k].requires_grad_(True) for k in names}
        self.optimizer = self.cfg.outer.build(list(self.params.values()))
        self.step, self.skipped = 0, 0
        self.incarnation = time.time()  # a restarted server (same actor) has a new one
        self.pending: tuple[int, Params, int, float] | None = None
        c = self.cfg.checkpoint
        self.writer = CheckpointWriter(self.run_dir, c.keep, shard, self.shards, retries=c.retries,
                                       retry_wait_s=c.retry_wait_s)
        if shard == 0:
            clean_temporary(self.run_dir)
        state = newest_readable(self.run_dir)
        if state is not None:
            self.load(state)
            log.info("parameter server %d/%d restored step %d from %s", shard, self.shards, self.step,
                     self.run_dir.location)
        elif self.shards > 1:  # a step every shard can go back to, should one restart early
            self.writer.submit(self.state())

    # -- reads -----------------------------------------------------------------------------
    def get(self) -> State:
        """(step, params): one object-store copy per step, shared by every worker."""
        return self.step, {k: v.detach() for k, v in self.params.items()}

    def get_step(self) -> int:
        return self.step

    def counters(self) -> dict[str, int]:
        return {"step": self.step, "skipped_steps": self.skipped}

    def pid(self) -> int:
        return os.getpid()

    # -- the update --------------------------------------------------------------------------
    def _check_step(self, step: int) -> None:
        if step != self.step:
            raise StaleStepError(f"apply(step={step}) rejected: the server is at step {self.step}")

    def reduce(self, step: int, *block_lists: list[Block]) -> dict[str, torch.Tensor]:
        """Sum this part's blocks up the tree; its per-tensor gradient norms (of the mean)."""
        self._check_step(step)
        start = time.perf_counter()
        total, n_tasks, received = tree_total(block_lists, self.cfg.runtime.logical_shards)
        grads = {k: g / n_tasks for k, g in total.items()}
        self.pending = (step, grads, received, time.perf_counter() - start)
        return {k: torch.linalg.vector_norm(g) for k, g in grads.items()}

    def update(self, step: int, *norm_parts: dict[str, torch.Tensor]) -> tuple[dict[str, float], State]:
        """Given every part's norms: clip, skip or step this part; (stats, next state)."""
        self._check_step(step)
        if self.pending is None or self.pending[0] != step:
            raise StaleStepError(f"update(step={step}) without its reduce on server shard {self.shard}")
        start = time.perf_counter()
        _, grads, received, reduce_s = self.pending
        self.pending = None
        norm = global_norm({k: v for part in norm_parts for k, v in part.items()}, self.order)
        stats = {"grad_norm": norm, "lr": lr_at(self.cfg, step), "skipped": 0.0}
        if math.isfinite(norm):
            self._update(grads, norm, stats["lr"])
        else:
            self.skipped += 1
            stats["skipped"] = 1.0
            log.warning("step %d: non-finite meta-gradient (norm %s); update skipped", step, norm)
        self.step += 1
        if self.step % self.cfg.checkpoint.every == 0:
            self.writer.submit(self.state())  # written behind the next steps
        stats |= {"skipped_steps": float(self.skipped), "server_s": reduce_s + time.perf_counter() - start,
                  "server_in_floats": float(received), "incarnation": self.incarnation,
                  "checkpoint_failures": float(self.writer.failures), "checkpoint_error": self.writer.error}
        return stats, self.get()

    def apply(self, step: int, *block_lists: list[Block]) -> tuple[dict[str, float], State]:
        """One server (``server_shards: 1``): reduce and update in one call."""
        return self.update(step, self.reduce(step, *block_lists))

    def _update(self, grads: Params, norm: float, lr: float) -> None:
        clip = self.cfg.outer.clip_grad_norm
        scale = min(1.0, clip / (norm + 1e-12)) if clip else 1.0
        for k, p in self.params.items():
            p.grad = grads[k] * scale if scale != 1.0 else grads[k]
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.cfg.outer.zero_head:
            zero_head(self.params, self.cfg.model.head_prefix)

    # -- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """This shard's checkpoint: its parameters, and the optimiser state by parameter name."""
        opt, names = self.optimizer.state_dict(), list(self.params)
        optimizer = {"by_name": True, "param_groups": [{k: v for k, v in g.items() if k != "params"}
                                                       for g in opt["param_groups"]],
                     "state": {names[i]: s for i, s in opt["state"].items()}}
        return {"step": self.step, "skipped": self.skipped,
                "params": {k: v.detach().clone() for k, v in self.params.items()}, "optimizer": optimizer}

    def checkpoint(self) -> str:
        """Write a checkpoint of the current step and wait until it is complete."""
        return self.writer.save(self.state())

    def restore(self, step: int) -> int:
        """Load this shard's part of the checkpoint of ``step`` (the driver brings every
        server shard back to one complete step after one of them restarted)."""
        self.writer.flush()
        state = load_checkpoint(self.run_dir, step)
        if state is None:
            raise NotFound(f"{self.run_dir.location}: no checkpoint of step {step}")
        return self.load(state)

    def load(self, state: dict[str, Any]) -> int:
        """Take this shard's parameters and optimiser state from a whole-model checkpoint, of
        this partition or another (a resume with another ``runtime.server_shards``)."""
        missing = set(self.params) - set(state["params"])
        if missing or set(state["params"]) - set(self.order):
            raise CheckpointError(f"the checkpoint of step {state['step']} in {self.run_dir.location} does not match "
                                  f"the model: parameters {sorted(missing ^ (set(state['params']) - set(self.order)))}")
        with torch.no_grad():
            for k in self.params:
                self.params[k].copy_(state["params"][k])
        opt = state["optimizer"]
        names = list(self.params)
        self.optimizer.load_state_dict({
            "state": {i: opt["state"][n] for i, n in enumerate(names) if n in opt["state"]},
            "param_groups": [dict(g, params=list(range(len(names)))) for g in opt["param_groups"]]})
        self.step, self.skipped, self.pending = int(state["step"]), int(state["skipped"]), None
        return self.step

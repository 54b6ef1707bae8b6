"""The parameter server: meta-parameters, the outer optimiser, the step counter.

A plain class; the driver makes it a restartable Ray actor at the call site. ``apply`` sums
the workers' per-shard meta-gradient SUMS in logical-shard order (so the result does not
depend on how many workers computed them), divides by the total task count and takes one
optimiser step. A step that was already applied is rejected, never applied twice; a
non-finite meta-gradient skips the update (counted) and leaves the parameters untouched.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import torch

from distmeta.config import RunConfig, validate
from distmeta.models.base import HEAD_PREFIX
from distmeta.runtime.checkpoint import CheckpointWriter, load_checkpoint
from distmeta.runtime.storage import RunDir
from distmeta.types import Params

log = logging.getLogger(__name__)

ShardResult = tuple[int, Params, int]
"""(logical shard, summed gradients, number of tasks)."""


class StaleStepError(RuntimeError):
    """``apply`` was called for a step other than the server's current one."""


def initial_params(cfg: RunConfig) -> Params:
    """The meta-parameters at step 0: a pure function of the config (seeded model init)."""
    torch.manual_seed(cfg.seed)
    model = cfg.model.build()
    params = cfg.algorithm.build().init_params(model)
    dtype = getattr(torch, cfg.runtime.dtype)
    params = {k: v.to(dtype) for k, v in params.items()}
    if cfg.outer.zero_head:
        zero_head(params)
    return params


def zero_head(params: Params) -> None:
    """The zeroing trick (Kao, Chiu, Chen 2021): set the linear head to zero."""
    with torch.no_grad():
        for name, value in params.items():
            if name.startswith(HEAD_PREFIX):
                value.zero_()


def lr_at(cfg: RunConfig, step: int) -> float:
    """Outer learning rate at ``step``: linear warm-up, then constant or cosine decay."""
    outer = cfg.outer
    factor = min(1.0, (step + 1) / outer.warmup_steps) if outer.warmup_steps else 1.0
    if outer.schedule == "cosine":
        progress = min(1.0, max(0, step - outer.warmup_steps) / max(1, outer.steps - outer.warmup_steps))
        factor *= 0.5 * (1.0 + math.cos(math.pi * progress))
    return outer.lr * factor


def sum_in_shard_order(results: list[ShardResult], n_shards: int) -> tuple[Params, int]:
    """Sum per-shard gradient sums in shard order 0..R-1; every shard exactly once."""
    by_shard: dict[int, ShardResult] = {}
    for result in results:
        if result[0] in by_shard:
            raise ValueError(f"logical shard {result[0]} was sent twice")
        by_shard[result[0]] = result
    missing = sorted(set(range(n_shards)) - set(by_shard))
    if missing or len(by_shard) != n_shards:
        raise ValueError(f"logical shards {missing} are missing (got {sorted(by_shard)})")
    total = {k: v.clone() for k, v in by_shard[0][1].items()}
    n_tasks = by_shard[0][2]
    for r in range(1, n_shards):
        for k, g in by_shard[r][1].items():
            total[k] += g
        n_tasks += by_shard[r][2]
    return total, n_tasks


class ParameterServer:
    def __init__(self, config: dict[str, Any], run_dir: str) -> None:
        self.cfg = validate(config)
        torch.set_num_threads(self.cfg.runtime.threads_per_worker)
        self.run_dir = RunDir(run_dir)
        self.params = {k: v.requires_grad_(True) for k, v in initial_params(self.cfg).items()}
        self.optimizer = self._make_optimizer()
        self.step, self.skipped = 0, 0
        self.writer = CheckpointWriter(self.run_dir, self.cfg.checkpoint.keep)
        state = load_checkpoint(self.run_dir)
        if state is not None:
            self._restore(state)
            log.info("parameter server restored step %d from %s", self.step, self.run_dir.location)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.outer
        values = list(self.params.values())
        if o.optimizer == "adam":
            return torch.optim.Adam(values, lr=o.lr, weight_decay=o.weight_decay)
        return torch.optim.SGD(values, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)

    # -- reads -----------------------------------------------------------------------------
    def get(self) -> tuple[int, Params]:
        """(step, params): one object-store copy per step, shared by every worker."""
        return self.step, {k: v.detach() for k, v in self.params.items()}

    def get_step(self) -> int:
        return self.step

    def counters(self) -> dict[str, int]:
        return {"step": self.step, "skipped_steps": self.skipped}

    def pid(self) -> int:
        return os.getpid()

    # -- the update --------------------------------------------------------------------------
    def apply(self, step: int, *shard_lists: list[ShardResult]) -> dict[str, float]:
        """Sum the shards' results in shard order, average, clip, take one outer step."""
        if step != self.step:
            raise StaleStepError(f"apply(step={step}) rejected: the server is at step {self.step}")
        start = time.perf_counter()
        results = [r for shard_list in shard_lists for r in shard_list]
        total, n_tasks = sum_in_shard_order(results, self.cfg.runtime.logical_shards)
        grads = {k: g / n_tasks for k, g in total.items()}
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads.values()])))
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
        stats |= {"skipped_steps": float(self.skipped), "server_s": time.perf_counter() - start}
        return stats

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
            zero_head(self.params)

    # -- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"step": self.step, "skipped": self.skipped,
                "params": {k: v.detach().clone() for k, v in self.params.items()},
                "optimizer": self.optimizer.state_dict()}

    def checkpoint(self) -> str:
        """Write a checkpoint of the current step and wait until it is complete."""
        return self.writer.save(self.state())

    def _restore(self, state: dict[str, Any]) -> None:
        missing = set(self.params) ^ set(state["params"])
        if missing:
            raise ValueError(f"checkpoint in {self.run_dir.location} does not match the model: parameters {sorted(missing)}")
        with torch.no_grad():
            for k, v in state["params"].items():
                self.params[k].copy_(v)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.skipped = int(state["step"]), int(state["skipped"])

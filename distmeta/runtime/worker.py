"""A meta-gradient worker: model, rule and task source for the logical shards it is given.

A plain class; the driver makes it a restartable Ray actor at the call site. ``compute``
returns one summed :class:`~distmeta.types.MetaGradient` per logical shard. Its episodes
are a pure function of (seed, step, shard), so a retried call, on this worker or another,
replays exactly.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import torch

from distmeta import plugins
from distmeta.config import RunConfig, validate
from distmeta.runtime.server import StaleStepError, State, server_partition
from distmeta.runtime.tree import Block, aligned_blocks, combine, presum
from distmeta.tasks.sources import task_source
from distmeta.types import Params


def set_determinism(cfg: RunConfig) -> None:
    """``runtime.deterministic``: deterministic torch kernels (and cuDNN), for bit-identity on
    GPUs; cuBLAS needs its workspace setting before CUDA starts."""
    if not cfg.runtime.deterministic:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast for ``runtime.precision: bf16`` (forward and backward of the inner loop
    and the outer gradient); parameters and gradient sums stay float32. fp16 is not offered:
    double backward under fp16 is known to give NaN, bf16 has float32's range."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class MetaWorker:
    def __init__(self, config: dict[str, Any], given: dict[str, dict[str, Any]] | None = None) -> None:
        plugins.accept(given)
        self.cfg = validate(config)
        set_determinism(self.cfg)
        torch.set_num_threads(self.cfg.runtime.threads_per_worker)
        self.device = torch.device("cuda" if self.cfg.runtime.gpus_per_worker > 0 and torch.cuda.is_available() else "cpu")
        self.dtype = getattr(torch, self.cfg.runtime.dtype)
        self.model = self.cfg.model.build().to(self.device, self.dtype)
        self.rule = self.cfg.algorithm.build()
        self.source = task_source(self.cfg)
        self.parts = server_partition(self.rule.init_params(self.model), self.cfg.runtime.server_shards)

    def compute(self, step: int, shards: list[int], *states: State) -> tuple[Any, ...]:
        """(status, blocks for server shard 0, ..., blocks for server shard K-1): the status
        (metric sums, timings) goes to the driver; each server shard gets this worker's
        maximal aligned blocks (:mod:`distmeta.runtime.tree`) of its own parameters."""
        params: Params = {}
        for server_step, part in states:
            if server_step != step:
                raise StaleStepError(f"worker got parameters of step {server_step} for step {step}")
            params |= part
        start = time.perf_counter()
        params = {k: v.to(self.device, non_blocking=True) for k, v in params.items()}
        leaves: dict[int, tuple[Params, int]] = {}
        metrics: dict[int, dict[str, float]] = {}
        for shard in shards:
            batch = self.source.sample(self.cfg.runtime.tasks_per_shard, self.cfg.seed, step, shard)
            with autocast(self.device, self.cfg.runtime.precision):
                mg = self.rule.meta_gradient(self.model, params, batch.to(self.device, self.dtype), step)
            leaves[shard] = ({k: g.detach() for k, g in mg.grads.items()}, mg.n_tasks)
            metrics[shard] = mg.metrics
        blocks = presum(leaves, self.cfg.runtime.logical_shards)
        out = [[(lo, hi, {k: grads[k].cpu() for k in part}, n) for lo, hi, grads, n in blocks] for part in self.parts]
        status = {"shards": list(shards), "metrics": metrics, "compute_s": time.perf_counter() - start,
                  "pid": os.getpid(), "host": socket.gethostname(),
                  "skipped_files": list(getattr(self.source, "skipped", []))}
        return (status, *out)

    def pid(self) -> int:
        return os.getpid()

    def ping(self) -> bool:
        return True

    def node_id(self) -> str | None:
        """The Ray node this worker runs on (``None`` outside Ray)."""
        try:
            import ray

            return ray.get_runtime_context().get_node_id()
        except Exception:  # not inside a Ray worker
            return None


class NodeAggregator:
    """Sums the blocks of the workers on one node into that node's maximal aligned blocks, so
    the server receives one gradient per node (when the node's shards form one tree node)."""

    def __init__(self, n_shards: int) -> None:
        self.n_shards = n_shards

    def combine(self, *block_lists: list[Block]) -> list[Block]:
        blocks = [b for blocks in block_lists for b in blocks]
        shards = [s for lo, hi, _, _ in blocks for s in range(lo, hi)]
        return combine(blocks, self.n_shards, aligned_blocks(shards, self.n_shards))

    def pid(self) -> int:
        return os.getpid()

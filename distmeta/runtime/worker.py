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

from distmeta.config import validate
from distmeta.runtime.server import ShardResult, StaleStepError
from distmeta.runtime.sources import task_source
from distmeta.types import Params


class MetaWorker:
    def __init__(self, config: dict[str, Any]) -> None:
        self.cfg = validate(config)
        torch.set_num_threads(self.cfg.runtime.threads_per_worker)
        self.device = torch.device("cuda" if self.cfg.runtime.gpus_per_worker > 0 and torch.cuda.is_available() else "cpu")
        self.dtype = getattr(torch, self.cfg.runtime.dtype)
        self.model = self.cfg.model.build().to(self.device, self.dtype)
        self.rule = self.cfg.algorithm.build()
        self.source = task_source(self.cfg)

    def compute(self, step: int, state: tuple[int, Params], shards: list[int]) -> tuple[dict[str, Any], list[ShardResult]]:
        """(status, results): per-shard gradient sums go to the server, the small status
        (metric sums, timings) to the driver."""
        server_step, params = state
        if server_step != step:
            raise StaleStepError(f"worker got parameters of step {server_step} for step {step}")
        start = time.perf_counter()
        params = {k: v.to(self.device) for k, v in params.items()}
        results: list[ShardResult] = []
        metrics: dict[int, dict[str, float]] = {}
        for shard in shards:
            batch = self.source.sample(self.cfg.runtime.tasks_per_shard, self.cfg.seed, step, shard)
            mg = self.rule.meta_gradient(self.model, params, batch.to(self.device, self.dtype))
            results.append((shard, {k: g.detach().cpu() for k, g in mg.grads.items()}, mg.n_tasks))
            metrics[shard] = mg.metrics
        status = {"shards": list(shards), "metrics": metrics, "compute_s": time.perf_counter() - start,
                  "pid": os.getpid(), "host": socket.gethostname(),
                  "skipped_files": list(getattr(self.source, "skipped", []))}
        return status, results

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

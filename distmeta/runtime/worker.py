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
from distmeta.config import ConfigError, RunConfig, validate
from distmeta.runtime.server import StaleStepError, State, server_partition
from distmeta.runtime.tree import Block, aligned_blocks, combine, presum
from distmeta.seeding import torch_seed
from distmeta.tasks.sources import task_source
from distmeta.types import EpisodeBatch, MetaGradient, Params


def set_determinism(cfg: RunConfig) -> None:
    """The kernels: ``runtime.tf32`` (TF32 on CUDA, off by default, where torch's own default
    runs convolutions in TF32); ``runtime.deterministic``: deterministic torch kernels (and
    cuDNN), for bit-identity on GPUs (cuBLAS needs its workspace setting before CUDA starts);
    otherwise cuDNN benchmarks the convolution algorithms for the shapes it meets."""
    torch.backends.cuda.matmul.allow_tf32 = cfg.runtime.tf32
    torch.backends.cudnn.allow_tf32 = cfg.runtime.tf32
    if not cfg.runtime.deterministic:
        torch.backends.cudnn.benchmark = True
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


def worker_device(gpus: float) -> torch.device:
    """The device of a worker Ray gave ``gpus`` GPUs: CUDA, or an error naming the key when
    torch sees none (a CPU build of torch, or no driver), never a silent CPU run."""
    if gpus <= 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"runtime.gpus_per_worker={gpus:g}: this worker ({socket.gethostname()}) has no CUDA "
                          f"device torch can use (torch {torch.__version__}, CUDA build "
                          f"{torch.version.cuda or 'none'}); install a CUDA build of torch on the GPU nodes, or set "
                          "runtime.gpus_per_worker=0")
    return torch.device("cuda")


def to_host(tensors: Params) -> Params:
    """Tensors on the host, in one device-to-host copy (one synchronisation) for all of them."""
    if not tensors or all(v.device.type == "cpu" for v in tensors.values()):
        return dict(tensors)
    if len({v.dtype for v in tensors.values()}) > 1:
        return {k: v.cpu() for k, v in tensors.items()}
    flat = torch.cat([v.reshape(-1) for v in tensors.values()]).cpu()
    out, at = {}, 0
    for k, v in tensors.items():
        out[k] = flat[at:at + v.numel()].view(v.shape)
        at += v.numel()
    return out


class MetaWorker:
    def __init__(self, config: dict[str, Any], given: dict[str, dict[str, Any]] | None = None) -> None:
        plugins.accept(given)
        self.cfg = validate(config)
        set_determinism(self.cfg)
        torch.set_num_threads(self.cfg.runtime.threads_per_worker)
        self.device = worker_device(self.cfg.runtime.gpus_per_worker)
        self.dtype = getattr(torch, self.cfg.runtime.dtype)
        self.model = self.cfg.model.build().to(self.device, self.dtype)
        self.rule = self.cfg.algorithm.build()
        self.source = task_source(self.cfg)
        self.parts = server_partition(self.rule.init_params(self.model), self.cfg.runtime.server_shards)

    def compute(self, step: int, shards: list[int], *states: State, report: bool = True) -> tuple[Any, ...]:
        """(status, blocks for server shard 0, ..., blocks for server shard K-1): the status
        (metric sums, timings) goes to the driver; each server shard gets this worker's
        maximal aligned blocks (:mod:`distmeta.runtime.tree`) of its own parameters.
        ``report``: whether the step is logged; the rule computes its metrics only then."""
        params: Params = {}
        for server_step, part in states:
            if server_step != step:
                raise StaleStepError(f"worker got parameters of step {server_step} for step {step}")
            params |= part
        start = time.perf_counter()
        params = {k: v.to(self.device, non_blocking=True) for k, v in params.items()}
        leaves: dict[int, tuple[Params, int]] = {}
        metrics: dict[int, dict[str, float]] = {}
        for shard, mg in zip(shards, self.shard_gradients(params, step, shards, report), strict=True):
            leaves[shard] = ({k: g.detach() for k, g in mg.grads.items()}, mg.n_tasks)
            metrics[shard] = mg.metrics
        blocks = presum(leaves, self.cfg.runtime.logical_shards)
        out = [[(lo, hi, to_host({k: grads[k] for k in part}), n) for lo, hi, grads, n in blocks] for part in self.parts]
        status = {"shards": list(shards), "metrics": metrics, "compute_s": time.perf_counter() - start,
                  "pid": os.getpid(), "host": socket.gethostname(),
                  "skipped_files": list(getattr(self.source, "skipped", []))}
        return (status, *out)

    def shard_gradients(self, params: Params, step: int, shards: list[int], report: bool = True) -> list[MetaGradient]:
        """The summed meta-gradients of logical shards ``shards`` at step ``step``: their
        episodes and whatever the model draws (DropBlock) are functions of (seed, step, shard)
        alone. Shards the rule can fuse (:meth:`~distmeta.algorithms.base.Rule.fused_group`:
        a forward that draws nothing, each shard's sums what they are alone; on the CPU) go in
        one call. Otherwise each shard's episodes are sampled as its turn comes: on a GPU the
        host prepares shard i + 1 while shard i's kernels run (a shard reads no value back)."""
        def batch(shard: int) -> EpisodeBatch:
            return self.source.sample(self.cfg.runtime.tasks_per_shard, self.cfg.seed, step, shard).to(
                self.device, self.dtype)

        ready: dict[int, EpisodeBatch] = {}
        fused = getattr(self.rule, "shard_gradients", None)
        with autocast(self.device, self.cfg.runtime.precision):
            if fused is not None and self.device.type == "cpu":
                ready = {shard: batch(shard) for shard in shards}
                batches = [ready[shard] for shard in shards]
                if self.rule.fused_group(self.model, params, batches):
                    return fused(self.model, params, batches, step, report)
            out = []
            for shard in shards:
                torch.manual_seed(torch_seed(self.cfg.seed, step, shard))
                out.append(self.rule.meta_gradient(self.model, params, ready[shard] if shard in ready else batch(shard), step, report))
            return out

    def evaluate(self, params: Params, split: str | None = None, episodes: int | None = None,
                 steps: int | None = None) -> Any:
        """The held-out evaluation (:func:`distmeta.evaluation.evaluate`) on this worker's device."""
        from distmeta.evaluation import evaluate

        return evaluate(self.cfg, params, split, episodes, steps, self.device)

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

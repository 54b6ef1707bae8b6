"""Section ``gpu``: the GPU acceptance check, one command (``make bench ARGS="--only gpu"``),
a few minutes on one GPU. Skipped, with the reason, when torch sees no CUDA device.

- **1 vs 2 CUDA workers, bitwise.** ``distmeta train`` of Conv4 MAML 5-way 1-shot from packed
  shards (``runtime.deterministic: true``), once with one worker holding the GPU and once with
  two workers sharing it (``gpus_per_worker: 0.5``): the final parameters must be equal bit for
  bit.
- **Conv4 MAML on the GPU, in process**: tasks/s and peak memory of one worker's ``compute``.
- **Step overhead** of the 2-worker run: median step time minus median compute time.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

from rich.console import Console

from benchmarks.report import print_table
from benchmarks.scaling import Plan, local_ray, overrides
from benchmarks.shards import pack_bench_shards


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _config(data: str, steps: int, workers: int, gpus: float):
    from distmeta.config import load_config

    plan = Plan(steps=steps, skip=2, nodes=())
    return load_config(None, [*overrides(plan, data, workers), f"runtime.gpus_per_worker={gpus}",
                              "runtime.cpus_per_worker=1", "runtime.deterministic=true"])


def in_process(data: str, steps: int) -> dict[str, Any]:
    """One worker's compute on the GPU: tasks/s and peak memory."""
    import torch

    from distmeta.runtime.server import ParameterServer
    from distmeta.runtime.worker import MetaWorker

    cfg = _config(data, steps, 1, 1.0)
    with tempfile.TemporaryDirectory() as tmp:
        server, worker = ParameterServer(cfg.to_dict(), tmp), MetaWorker(cfg.to_dict())
        shards = list(range(cfg.runtime.logical_shards))
        torch.cuda.reset_peak_memory_stats()
        times = []
        for step in range(steps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = worker.compute(step, shards, server.get())
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            server.apply(step, *out[1:])
    kept = times[2:] or times
    return {"device": torch.cuda.get_device_name(), "tasks_per_s": cfg.runtime.meta_batch / statistics.median(kept),
            "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20}


def one_vs_two(data: str, steps: int, tmp: str) -> dict[str, Any]:
    import torch

    from distmeta.runtime.run import train

    results = {}
    with local_ray():
        for workers, gpus in ((1, 1.0), (2, 0.5)):
            results[workers] = train(_config(data, steps, workers, gpus), run_dir=f"{tmp}/gpu-w{workers}",
                                     evaluate_at_end=False)
    a, b = results[1].params, results[2].params
    kept = [m for _, m in results[2].history[2:]] or [m for _, m in results[2].history]
    step_s, compute_s = (statistics.median(m[k] for m in kept) for k in ("step_s", "compute_s"))
    return {"bitwise_equal": a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a),
            "tasks_per_s_1": results[1].tasks_per_s, "tasks_per_s_2": results[2].tasks_per_s,
            "step_s": step_s, "compute_s": compute_s, "overhead_s": step_s - compute_s}


def run(quick: bool, console: Console) -> dict[str, Any]:
    if not cuda_available():
        console.print("gpu: skipped (torch sees no CUDA device)")
        return {"skipped": "torch sees no CUDA device"}
    steps = 10 if quick else 40
    with tempfile.TemporaryDirectory(prefix="distmeta-bench-gpu-") as tmp:
        packed = pack_bench_shards(f"{tmp}/shards")
        single = in_process(packed.path, steps)
        pair = one_vs_two(packed.path, steps, tmp)
    print_table(console, f"gpu: Conv4 MAML 5w1s, meta-batch 32, on {single['device']}", ["quantity", "value"], [
        ["1 vs 2 CUDA workers, final parameters bitwise equal", str(pair["bitwise_equal"])],
        ["tasks/s, one worker's compute in process", f"{single['tasks_per_s']:.0f}"],
        ["peak GPU memory, one worker (MB)", f"{single['peak_memory_mb']:.0f}"],
        ["tasks/s, distmeta train, 1 / 2 workers", f"{pair['tasks_per_s_1']:.0f} / {pair['tasks_per_s_2']:.0f}"],
        ["step overhead, 2 workers (ms): median step - median compute", f"{1000 * pair['overhead_s']:.2f}"]])
    return {"in_process": single, "one_vs_two": pair, "shards": packed.to_dict() | {"path": None}}

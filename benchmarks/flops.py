"""Section ``flops``: model FLOPs per MAML meta-step, achieved FLOP/s, and efficiency.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and
convolutions, forward and backward, as the operators are dispatched) on the per-task loop,
the reference computation; the vectorised path's count is reported beside it (vmap batches
some operators differently, e.g. convolution weight gradients). Achieved FLOP/s is the count
divided by the measured step time of each path; efficiency is that over the machine's dense
float32 matmul rate (1024x1024, one thread) measured in the same run.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from rich.console import Console
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.report import print_table
from benchmarks.timing import load_average, ratio, time_call, time_interleaved
from benchmarks.workloads import Workload, omniglot_conv4, sinusoid

log = logging.getLogger(__name__)
MATMUL_N = 1024
PATHS = {"vectorized": True, "loop": False}


def matmul_rate(n: int = MATMUL_N, repeats: int = 10) -> dict[str, Any]:
    """Dense float32 ``n x n`` matmul FLOP/s on the current thread count (2 n^3 per product)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    timing = time_call(lambda: a @ b, repeats=repeats, warmup=3)
    flops = 2.0 * n ** 3
    return {"n": n, "flop_per_matmul": flops, "flop_per_s": flops / timing.median_s, **timing.to_dict()}


def count_flops(fn: Any) -> tuple[int, dict[str, int]]:
    """Total FLOPs of ``fn()`` and their split by operator."""
    with FlopCounterMode(display=False) as counter:
        fn()
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), by_op


def measure(w: Workload, repeats: int, peak: float) -> dict[str, Any]:
    """FLOPs per step by path, step times side by side, FLOP/s and efficiency."""
    steps = {path: w.meta_step(w.rule("maml", vectorize=v)) for path, v in PATHS.items()}
    counts = {path: count_flops(fn) for path, fn in steps.items()}
    model_flops = counts["loop"][0]
    timings = time_interleaved(steps, repeats, warmup=1)
    paths = {}
    for path, timing in timings.items():
        rate = model_flops / timing.median_s
        paths[path] = {"counted_flops": counts[path][0], "flops_by_op": counts[path][1],
                       "step_s": timing.median_s, "tasks_per_s": w.meta_batch / timing.median_s,
                       "achieved_flop_per_s": rate, "efficiency": ratio(rate, peak)}
    return w.describe() | {"rule": "maml", "hyper_maml": w.hyper["maml"], "model_flops_per_step": model_flops,
                           "model_flops_per_task": model_flops / w.meta_batch, "repeats": repeats,
                           "paths": paths, "load_average": load_average()}


def print_results(console: Console, result: dict[str, Any]) -> None:
    """The section's table: FLOPs, step time, FLOP/s and efficiency per path."""
    peak = result["matmul"]["flop_per_s"]
    rows = [["matmul 1024x1024", "-", "-", "-", "-", f"{peak / 1e9:.1f}", "100%"]]
    for name, w in result["workloads"].items():
        for path, p in w["paths"].items():
            rows.append([f"{name} MAML (T={w['meta_batch']})", path, f"{w['model_flops_per_step'] / 1e9:.3f}",
                         f"{p['counted_flops'] / 1e9:.3f}", f"{p['step_s']:.3f}",
                         f"{p['achieved_flop_per_s'] / 1e9:.2f}", f"{100 * p['efficiency']:.1f}%"])
    print_table(console, "flops: model FLOPs per meta-step / step time vs dense matmul, one core",
                ["workload", "path", "model GFLOP/step", "counted on path", "step s", "GFLOP/s", "of matmul"], rows,
                caption="model FLOPs = the per-task loop's count; 'counted on path' = what that path dispatched")


def run(quick: bool, console: Console) -> dict[str, Any]:
    """The section's results (JSON-able); prints its table."""
    peak = matmul_rate(repeats=5 if quick else 20)
    workloads = {
        "sinusoid": measure(sinusoid(), 2 if quick else 5, peak["flop_per_s"]),
        "conv4": measure(omniglot_conv4(meta_batch=2 if quick else 8), 1 if quick else 2, peak["flop_per_s"]),
    }
    result = {"threads": 1, "matmul": peak, "workloads": workloads,
              "note": "model FLOPs = the per-task loop's count (FlopCounterMode: matmul/conv forward+backward); "
                      "Conv4 meta-batch is smaller than in throughput: FLOPs and time are both per task linear"}
    print_results(console, result)
    return result

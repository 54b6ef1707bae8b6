"""Section ``deep``: second-order MAML through ResNet-12 within memory.

MAML on ResNet-12 (MetaOptNet's 64-160-320-640 network, 84x84 RGB), 5-way 1-shot with 15
queries per class (the standard protocol), one task, for K = 1, 5, 10 inner steps, three ways:

* ``plain``: the unrolled loop's graph kept whole (memory grows with K);
* ``checkpoint``: ``algorithm.checkpoint_inner`` (:mod:`distmeta.algorithms.checkpointed`:
  one inner step's graph at a time, rebuilt in the backward pass);
* ``checkpoint + bf16``: the same under ``runtime.precision: bf16`` autocast.

Peak memory is the profiler's allocator peak (:func:`benchmarks.memory.peak_allocated_bytes`)
and step time the wall time of that same call (one thread; a full-size step takes seconds to
a minute on a CPU core, so the profiler's per-operator cost is negligible and each cell is
measured once). Targets: memory at K=10 with checkpointing <= 1.5x memory at K=1; step time
with checkpointing <= 1.5x without. ``--quick`` uses an 8-16-32-64 network and 1 query.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from rich.console import Console

from benchmarks.memory import peak_allocated_bytes
from benchmarks.report import fmt_bytes, fmt_ratio, print_table
from benchmarks.timing import ratio
from distmeta.algorithms import MAML
from distmeta.models import resnet12
from distmeta.runtime.worker import autocast
from distmeta.tasks import ImageClasses

log = logging.getLogger(__name__)
INNER_STEPS = (1, 5, 10)
VARIANTS = {"plain": (False, "float32"), "checkpoint": (True, "float32"), "checkpoint + bf16": (True, "bf16")}


def _step(model, params, batch, steps: int, checkpoint: bool, precision: str):
    rule = MAML(inner_lr=0.01, inner_steps=steps, vectorize=False, checkpoint_inner=checkpoint)

    def call() -> object:
        with autocast(torch.device("cpu"), precision):
            return rule.meta_gradient(model, params, batch)
    return call


def run(quick: bool, console: Console) -> dict[str, Any]:
    """The section's results (JSON-able); prints its table."""
    torch.manual_seed(0)
    channels, size, query = ((8, 16, 32, 64), 84, 1) if quick else ((64, 160, 320, 640), 84, 15)
    model = resnet12(5, image_size=size, channels=channels)
    params = {k: v.detach() for k, v in model.named_parameters()}
    pool = np.random.default_rng(0).integers(0, 256, (10, 1 + query, 3, size, size), dtype=np.uint8)
    batch = ImageClasses(pool, 5, 1, query).sample(1, 0, 0, 0)
    out: dict[str, Any] = {"model": f"ResNet-12 {list(channels)}, {size}x{size}", "params": sum(p.numel() for p in params.values()),
                           "way": 5, "shot": 1, "query": query, "tasks": 1, "peak_bytes": {}, "step_s": {}}
    _step(model, params, batch.slice(0, 1), 1, False, "float32")()  # warm-up
    for k in INNER_STEPS:
        out["peak_bytes"][str(k)], out["step_s"][str(k)] = {}, {}
        for variant, spec in VARIANTS.items():
            start = time.perf_counter()
            out["peak_bytes"][str(k)][variant] = peak_allocated_bytes(_step(model, params, batch, k, *spec),
                                                                      per_allocation=True)
            out["step_s"][str(k)][variant] = time.perf_counter() - start
        log.info("deep: K=%d peaks %s, times %s", k, out["peak_bytes"][str(k)], out["step_s"][str(k)])
    peaks, times = out["peak_bytes"], out["step_s"]
    out["checkpoint_memory_k10_over_k1"] = ratio(peaks["10"]["checkpoint"], peaks["1"]["checkpoint"])
    out["plain_memory_k10_over_k1"] = ratio(peaks["10"]["plain"], peaks["1"]["plain"])
    out["checkpoint_time_over_plain"] = {k: ratio(times[k]["checkpoint"], times[k]["plain"]) for k in times}
    print_results(console, out)
    return out


def print_results(console: Console, r: dict[str, Any]) -> None:
    rows = []
    for k in INNER_STEPS:
        p, t = r["peak_bytes"][str(k)], r["step_s"][str(k)]
        rows.append([f"K={k}", *[f"{fmt_bytes(p[v])} / {t[v]:.2f} s" for v in VARIANTS]])
    rows.append(["K=10 / K=1 memory", fmt_ratio(r["plain_memory_k10_over_k1"]),
                 fmt_ratio(r["checkpoint_memory_k10_over_k1"]), "-"])
    rows.append(["time, checkpoint / plain", "-", ", ".join(f"K={k}: {fmt_ratio(v)}" for k, v in
                                                           r["checkpoint_time_over_plain"].items()), "-"])
    print_table(console, f"deep: MAML on {r['model']} ({r['params'] / 1e6:.1f}M params), 5-way 1-shot, "
                         f"{r['query']} query/class, one task: peak memory / step time",
                ["inner steps", *VARIANTS], rows)

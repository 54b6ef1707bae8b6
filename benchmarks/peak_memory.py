"""Section ``memory``: peak memory of MAML and iMAML meta-gradients as inner steps grow.

MAML differentiates through the unrolled inner loop, so it keeps every inner step's
activations: its peak grows linearly with the inner steps K (learn2learn #393). iMAML's
implicit gradient needs only the adapted parameters and Hessian-vector products at them:
its peak should not depend on K (Rajeswaran et al. 2019, Section 3). Peaks are the profiler's
allocator records (:func:`benchmarks.memory.peak_allocated_bytes`, ``per_allocation``).

Both workloads run vectorised over their meta-batch (the path their configs use), so a
peak holds every task of the meta-batch at once.
"""

from __future__ import annotations

import logging
from typing import Any

from rich.console import Console

from benchmarks.memory import peak_allocated_bytes
from benchmarks.report import fmt_bytes, fmt_ratio, print_table
from benchmarks.timing import ratio
from benchmarks.workloads import Workload, omniglot_conv4, sinusoid

log = logging.getLogger(__name__)
INNER_STEPS = (1, 5, 10, 20)
RULES = ("maml", "imaml")


def peaks(w: Workload, rule: str, vectorize: bool) -> dict[str, Any]:
    """Peak bytes at each K in :data:`INNER_STEPS`, and each peak's ratio to K=1's."""
    found: dict[str, int] = {}
    for k in INNER_STEPS:
        step = w.meta_step(w.rule(rule, inner_steps=k, vectorize=vectorize))
        found[str(k)] = peak_allocated_bytes(step, per_allocation=True)
        log.info("memory: %s %s K=%d: %d bytes", w.name, rule, k, found[str(k)])
    base = found[str(INNER_STEPS[0])]
    return {"peak_bytes": found, "ratio_to_k1": {k: ratio(v, base) for k, v in found.items()}}


def measure(w: Workload, vectorize: bool) -> dict[str, Any]:
    """Peaks of every rule on one workload."""
    rules = {rule: peaks(w, rule, vectorize) for rule in RULES}
    return w.describe() | {"vectorize": vectorize, "rules": rules}


def print_results(console: Console, result: dict[str, Any]) -> None:
    """The section's table: peak bytes per K, with the ratio to K=1."""
    rows = []
    for name, w in result["workloads"].items():
        for rule, r in w["rules"].items():
            cells = [f"{fmt_bytes(r['peak_bytes'][str(k)])} ({fmt_ratio(r['ratio_to_k1'][str(k)])})"
                     for k in INNER_STEPS]
            rows.append([f"{name} (T={w['meta_batch']}, {'vmap' if w['vectorize'] else 'loop'})", rule, *cells])
    print_table(console, "memory: peak allocated bytes of one meta-gradient (ratio to K=1)",
                ["workload", "rule", *[f"K={k}" for k in INNER_STEPS]], rows)


def run(quick: bool, console: Console) -> dict[str, Any]:
    """The section's results (JSON-able); prints its table."""
    workloads = {
        "sinusoid": measure(sinusoid(), vectorize=True),
        "conv4": measure(omniglot_conv4(meta_batch=1 if quick else 4), vectorize=True),
    }
    result = {"inner_steps": list(INNER_STEPS), "method": "profiler allocator records, running peak",
              "workloads": workloads}
    print_results(console, result)
    return result

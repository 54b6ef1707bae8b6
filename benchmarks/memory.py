"""Peak memory of a computation, measured by the PyTorch profiler's allocator events.

Every allocation and free on the CPU (or the accelerator) is recorded with its size; the
peak is the largest running total over the computation, so it counts what the computation
itself holds at once (the inputs it was given are not counted).

Two ways to add the records up:

* by operator (default): each operator's net allocation ("self" memory, which nets out the
  temporaries it freed before returning) is added at the operator's start time;
* ``per_allocation=True``: the raw allocator records in time order. This is the true running
  peak (temporaries inside one operator count too, so it is a little higher) and several
  times faster, since the profiler's operator tree is never built. The bench uses it.
"""

from __future__ import annotations

from collections.abc import Callable

from torch.profiler import ProfilerActivity, profile

MEMORY_EVENT = "[memory]"


def _peak_by_operator(prof: profile) -> int:
    """Running peak over operators' net ("self") allocations, at their start times."""
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage + event.self_device_memory_usage
        peak = max(peak, current)
    return peak


def _peak_per_allocation(prof: profile) -> int:
    """Running peak over the raw allocator records, in time order."""
    results = getattr(prof.profiler, "kineto_results", None)
    if results is None:  # a profiler without raw results: fall back to the operator tree
        return _peak_by_operator(prof)
    records = [e for e in results.events() if e.name() == MEMORY_EVENT]
    current = peak = 0
    for record in sorted(records, key=lambda e: e.start_ns()):
        current += record.nbytes()
        peak = max(peak, current)
    return peak


def peak_allocated_bytes(fn: Callable[[], object], *, per_allocation: bool = False) -> int:
    """Peak bytes allocated by ``fn()`` above what was allocated when it started."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return _peak_per_allocation(prof) if per_allocation else _peak_by_operator(prof)

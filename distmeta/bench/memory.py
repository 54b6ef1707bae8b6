"""Peak memory of a computation, measured by the PyTorch profiler's allocator events.

Every allocation and free on the CPU (or the accelerator) is recorded with its size; the
peak is the largest running total over the computation, so it counts what the computation
itself holds at once (the inputs it was given are not counted).
"""

from __future__ import annotations

from collections.abc import Callable

from torch.profiler import ProfilerActivity, profile


def peak_allocated_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes allocated by ``fn()`` above what was allocated when it started."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage + event.self_device_memory_usage
        peak = max(peak, current)
    return peak

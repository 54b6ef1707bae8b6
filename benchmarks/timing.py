"""Timing helpers shared by the bench sections: warm-up, median of repeats, one thread.

Every figure is the median of ``repeats`` wall-clock timings (``time.perf_counter``) taken
after ``warmup`` untimed calls, so one-off costs (first-call dispatch, allocator growth,
lazy initialisation) stay out of the numbers.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Timing:
    """Seconds of each timed repeat, and their median."""

    seconds: tuple[float, ...]

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {"median_s": self.median_s, "repeats_s": list(self.seconds)}


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 1,
              warmup_fn: Callable[[], object] | None = None) -> Timing:
    """Median-of-``repeats`` timing of ``fn()`` after ``warmup`` calls of ``warmup_fn`` (or ``fn``)."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: must be >= 1")
    for _ in range(warmup):
        (warmup_fn or fn)()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return Timing(tuple(seconds))


def time_interleaved(calls: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                     warmup_calls: dict[str, Callable[[], object]] | None = None) -> dict[str, Timing]:
    """Time several calls side by side: warm each up, then ``repeats`` rounds of one call of
    each in turn, so load from elsewhere on the machine falls on all of them alike."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: must be >= 1")
    for name, fn in calls.items():
        for _ in range(warmup):
            ((warmup_calls or {}).get(name) or fn)()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return {name: Timing(tuple(s)) for name, s in seconds.items()}


def load_average() -> float | None:
    """The 1-minute load average (other processes on the machine skew timings)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


@contextmanager
def threads(n: int) -> Iterator[None]:
    """``torch.set_num_threads(n)`` inside the block, restored after it."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or ``None`` when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
    }

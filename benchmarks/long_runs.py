"""Section ``longrun``: memory a run's driver holds for its logged steps, after 1k and 100k.

What the driver keeps per logged step: the training history (:class:`distmeta.rundir.metrics.History`,
every step also written to the run directory) and, while the tracking server is down, the
tracker's spill, which for a run directory on a URI is mirrored to the store
(:class:`distmeta.tracking.mirror.SpillMirror`; here a ``file://`` URI, the code path of
s3:// and gs://). Bytes are ``tracemalloc``'s count of Python allocations still held after
the steps, measured for 1k and 100k steps side by side; the ratio is 100k over 1k (1.0: the
memory does not grow with the run). The bytes uploaded per mirror sync show the spill is
appended, not uploaded whole. ``unbounded_list`` is the reference: every step's metrics kept.
"""

from __future__ import annotations

import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.report import fmt, fmt_bytes, fmt_ratio, print_table
from benchmarks.timing import ratio
from distmeta.rundir.metrics import History
from distmeta.rundir.storage import RunDir
from distmeta.tracking.mirror import SpillMirror
from distmeta.tracking.spill import MetricRecord, Spill

METRICS = ("query_loss", "query_loss_before", "grad_norm", "step_s", "tasks_per_s", "retries", "skipped_files")


def _metrics(step: int) -> dict[str, float]:
    return {k: float(step % 97) / (i + 1) for i, k in enumerate(METRICS)}


def history_bytes(root: Path, steps: int, uri: bool) -> dict[str, Any]:
    rd = RunDir(root.as_uri() if uri else str(root))
    rd.makedirs()
    tracemalloc.start()
    start = time.perf_counter()
    history = History(rd)
    for step in range(steps):
        history.add(step, _metrics(step))
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    history.close()
    return {"bytes": held, "s": time.perf_counter() - start, "points_kept": len(history.curve_points())}


def list_bytes(root: Path, steps: int) -> dict[str, Any]:
    """The reference: every step's metrics kept in a list (what a history without a bound holds)."""
    tracemalloc.start()
    start = time.perf_counter()
    kept = [(step, _metrics(step)) for step in range(steps)]
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {"bytes": held, "s": time.perf_counter() - start, "points_kept": len(kept)}


def spill_bytes(root: Path, steps: int, log_every: int = 10) -> dict[str, Any]:
    """The tracking server down for the whole run: every logged step spilled and mirrored."""
    rd, local = RunDir((root / "store").as_uri()), root / "staging"
    tracemalloc.start()
    start = time.perf_counter()
    mirror, spill = SpillMirror(rd, local), Spill(local)
    for step in range(0, steps, log_every):
        spill.write_metrics("run", [MetricRecord(f"train/{k}", v, step, 0) for k, v in _metrics(step).items()])
        mirror.sync()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    spilled = (local / "unsent_metrics.jsonl").stat().st_size
    return {"bytes": held, "s": time.perf_counter() - start, "spill_bytes": spilled,
            "syncs": steps // log_every}


def run(quick: bool, console: Console) -> dict[str, Any]:
    large = 10_000 if quick else 100_000
    result: dict[str, Any] = {"small_steps": 1_000, "large_steps": large}
    with tempfile.TemporaryDirectory(prefix="distmeta-bench-long-") as tmp:
        for name, measure in (("history_local", lambda p, n: history_bytes(p, n, uri=False)),
                              ("history_uri", lambda p, n: history_bytes(p, n, uri=True)),
                              ("spill_mirror_uri", spill_bytes), ("unbounded_list", list_bytes)):
            small = measure(Path(tmp) / f"{name}-small", 1_000)
            big = measure(Path(tmp) / f"{name}-large", large)
            result[name] = {"small": small, "large": big, "ratio": ratio(big["bytes"], small["bytes"])}
    rows = [(name, fmt_bytes(r["small"]["bytes"]), fmt_bytes(r["large"]["bytes"]), fmt_ratio(r["ratio"]),
             fmt(r["large"]["s"])) for name, r in result.items() if isinstance(r, dict)]
    print_table(console, f"driver memory after 1k and {large:,} logged steps",
                ("what", "after 1k", f"after {large:,}", "ratio", f"{large:,} steps s"), rows,
                caption="tracemalloc bytes held; spill: tracking server down the whole run, log_every 10")
    return result

"""A run's training metrics, in memory that does not grow with the run.

Every logged step goes to the run directory as one JSON line (``metrics.jsonl`` beside the
checkpoints, appended; on a URI, where stores cannot append, as numbered parts
``metrics/part-000001.jsonl`` written every :data:`PART_LINES` lines or
:data:`PART_SECONDS` seconds and at the end). What stays in memory is a fixed number of
points for the plots (halved, every other point kept, when full), the last step's metrics
and the sums behind tasks per second. :func:`read_metrics` reads the whole history back,
the last line of a step winning (a resumed run logs again the steps after its checkpoint).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import IO

from distmeta.rundir import layout
from distmeta.rundir.storage import FILE_MODE, RunDir, is_uri

log = logging.getLogger(__name__)
KEEP = 2048
"""Points of the history kept in memory (for the training-curves plot)."""
PART_LINES = 10_000
PART_SECONDS = 300.0

Point = tuple[int, dict[str, float]]


class History:
    """The steps one training session collected: bounded points, the last, the totals;
    with ``rd`` the logged steps also written to the run dir."""

    def __init__(self, rd: RunDir | None = None, keep: int = KEEP) -> None:
        if keep < 2:
            raise ValueError(f"History keep={keep}: keep at least 2 points")
        self.keep = keep
        self.points: list[Point] = []
        self.stride = 1
        self.count = 0
        self.step_s = 0.0
        self.last: Point | None = None
        self._out = _Writer(rd) if rd is not None else None

    def add(self, step: int, metrics: dict[str, float], logged: bool = True) -> None:
        """One collected step; ``logged`` (the run's one decision, :meth:`Pipeline.reports`):
        written to the run dir too."""
        self.count += 1
        self.step_s += float(metrics.get("step_s", 0.0))
        self.last = (step, metrics)
        if (self.count - 1) % self.stride == 0:
            self.points.append((step, metrics))
            if len(self.points) > self.keep:
                self.points = self.points[::2]
                self.stride *= 2
        if self._out is not None and logged:
            self._out.write(step, metrics)

    def curve_points(self) -> list[Point]:
        """The kept points, and the last step's when it was not kept."""
        if self.last is not None and (not self.points or self.points[-1][0] != self.last[0]):
            return [*self.points, self.last]
        return list(self.points)

    def tasks_per_s(self, meta_batch: int) -> float:
        """Tasks over the summed step times of the steps collected."""
        return meta_batch * self.count / max(self.step_s, 1e-9)

    def close(self) -> None:
        """Write what is buffered (a run dir on a URI) and close the file."""
        if self._out is not None:
            self._out.close()

    def __len__(self) -> int:
        return self.count


class _Writer:
    """Appends to ``metrics.jsonl`` locally; writes numbered parts on a URI."""

    def __init__(self, rd: RunDir) -> None:
        self.rd, self.append = rd, not is_uri(rd.location)
        self.fh: IO[str] | None = None
        self.buffer: list[str] = []
        self.since = time.monotonic()
        self.part: int | None = None  # parts already there (a resumed run): read at the first write
        self.failed = False

    def write(self, step: int, metrics: dict[str, float]) -> None:
        line = json.dumps({"step": step, **metrics}, allow_nan=True) + "\n"
        if self.append:
            self._append(line)
            return
        self.buffer.append(line)
        if len(self.buffer) >= PART_LINES or time.monotonic() - self.since >= PART_SECONDS:
            self.flush()

    def _append(self, line: str) -> None:
        try:
            if self.fh is None:
                fd = os.open(self.rd.path(layout.METRICS), os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
                self.fh = os.fdopen(fd, "a", encoding="utf-8")
            self.fh.write(line)
            self.fh.flush()
        except OSError as exc:  # the metrics stream is a record, never a reason to stop training
            self._warn(exc)

    def flush(self) -> None:
        if not self.buffer:
            return
        try:
            if self.part is None:
                self.part = len(_parts(self.rd))
            self.rd.write_text(layout.metrics_part(self.part + 1), "".join(self.buffer))
        except Exception as exc:  # the store is down: keep the lines, try again at the next part
            self._warn(exc)
            if len(self.buffer) >= 4 * PART_LINES:  # bounded memory even if the store never comes back
                log.warning("dropped %d metric lines %s could not take (the tracker has them)",
                            len(self.buffer) - PART_LINES, self.rd.uri(layout.METRICS_PARTS))
                self.buffer = self.buffer[-PART_LINES:]
            return
        self.part += 1
        self.buffer, self.since = [], time.monotonic()

    def _warn(self, exc: Exception) -> None:
        if not self.failed:
            log.warning("could not write the metrics to %s: %s", self.rd.uri(layout.METRICS), exc)
        self.failed = True

    def close(self) -> None:
        self.flush()
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def _parts(rd: RunDir) -> list[str]:
    return [n for n in rd.list(layout.METRICS_PARTS) if n.startswith("part-") and n.endswith(".jsonl")]


def read_metrics(rd: RunDir) -> list[Point]:
    """Every step the run directory's metrics hold, in step order; the last line of a step wins."""
    texts = [rd.read_text(layout.METRICS)] if rd.exists(layout.METRICS) else []
    texts += [rd.read_text(f"{layout.METRICS_PARTS}/{name}") for name in _parts(rd)]
    steps: dict[int, dict[str, float]] = {}
    for text in texts:
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a line cut short by a crash
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                step = row.pop("step")
                steps[step] = row
    return sorted(steps.items())

"""Checkpoints of the parameter server: params, optimiser state, step, counters.

The data-stream position is the step itself: a shard's episodes for step t are a pure
function of (seed, t, shard), so restoring the step restores the stream. Files are written
atomically (write, then rename) as ``checkpoints/step-XXXXXXXX.pt``; the newest ``keep``
are kept. Loading uses ``torch.load(weights_only=True)``: no pickle of arbitrary objects.
"""

from __future__ import annotations

import io
import logging
import re
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from distmeta.runtime.storage import RunDir

log = logging.getLogger(__name__)
FOLDER = "checkpoints"
PATTERN = re.compile(r"^step-(\d{8})\.pt$")


def checkpoint_name(step: int) -> str:
    return f"{FOLDER}/step-{step:08d}.pt"


def checkpoint_steps(run_dir: RunDir) -> list[int]:
    return sorted(int(m.group(1)) for n in run_dir.list(FOLDER) if (m := PATTERN.match(n)))


def _serialise(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _write(run_dir: RunDir, step: int, data: bytes, keep: int) -> str:
    name = checkpoint_name(step)
    run_dir.write_bytes(name, data)
    for old in checkpoint_steps(run_dir)[:-keep]:
        run_dir.delete(checkpoint_name(old))
    return run_dir.uri(name)


def save_checkpoint(run_dir: RunDir, state: dict[str, Any], keep: int) -> str:
    return _write(run_dir, int(state["step"]), _serialise(state), keep)


class CheckpointWriter:
    """Writes checkpoints in a background thread, so slow storage (an object store) does not
    stall the step loop. The state is serialised to bytes at once (a snapshot of that step);
    the upload and the pruning of old files happen behind. One write is in flight at most: a
    new one first waits for the previous. Each file appears whole (write, then rename) or not
    at all, so a crash mid-write leaves the previous checkpoint as the newest."""

    def __init__(self, run_dir: RunDir, keep: int) -> None:
        self.run_dir, self.keep = run_dir, keep
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending: Future | None = None

    def submit(self, state: dict[str, Any]) -> None:
        data = _serialise(state)
        self.flush()
        self._pending = self._pool.submit(_write, self.run_dir, int(state["step"]), data, self.keep)

    def flush(self) -> str | None:
        """Wait for the write in flight; its URI (``None`` when there was none). A failed write
        is logged and raised here."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        try:
            return pending.result()
        except Exception as exc:
            log.error("checkpoint write to %s failed: %s", self.run_dir.location, exc)
            raise

    def save(self, state: dict[str, Any]) -> str:
        """Write now and wait: for the last checkpoint of a run, or before stopping."""
        self.submit(state)
        uri = self.flush()
        assert uri is not None
        return uri


def load_checkpoint(run_dir: RunDir, step: int | None = None) -> dict[str, Any] | None:
    """The checkpoint at ``step`` (default: the newest); ``None`` when there is none."""
    steps = checkpoint_steps(run_dir)
    if not steps:
        return None
    step = steps[-1] if step is None else step
    data = run_dir.read_bytes(checkpoint_name(step))
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:
        raise ValueError(f"checkpoint {run_dir.uri(checkpoint_name(step))} cannot be read: {exc}") from None

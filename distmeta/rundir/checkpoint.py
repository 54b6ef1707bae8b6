"""Checkpoints of the parameter server: params, optimiser state, step, counters.

The data-stream position is the step itself: a shard's episodes for step t are a pure
function of (seed, t, shard), so restoring the step restores the stream. Files are written
atomically (write, then rename) as ``checkpoints/step-XXXXXXXX.pt``, or, with K server shards
(``runtime.server_shards``), one file per shard, ``step-XXXXXXXX.shard-k-of-K.pt``: a step's
checkpoint is complete only when all K files exist, and restores take the newest complete
one. The newest ``keep`` are kept. Loading uses ``torch.load(weights_only=True)``: no pickle
of arbitrary objects.
"""

from __future__ import annotations

import io
import logging
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from distmeta.errors import CheckpointError, NotFound
from distmeta.rundir import layout
from distmeta.rundir.layout import checkpoint as checkpoint_name
from distmeta.rundir.storage import RunDir

log = logging.getLogger(__name__)


def _files(run_dir: RunDir) -> dict[int, dict[int, set[int]]]:
    """step -> shard count -> the shard indices written."""
    found: dict[int, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    for name in run_dir.list(layout.CHECKPOINTS):
        if m := layout.CHECKPOINT_PATTERN.match(name):
            found[int(m[1])][int(m[3] or 1)].add(int(m[2] or 0))
    return found


def checkpoint_steps(run_dir: RunDir, shards: int | None = None) -> list[int]:
    """Steps with a complete checkpoint (of ``shards`` server shards; any count if ``None``)."""
    return sorted(step for step, by_count in _files(run_dir).items()
                  if any(len(idx) == k and (shards is None or k == shards) for k, idx in by_count.items()))


def _shard_count(run_dir: RunDir, step: int) -> int:
    return next(k for k, idx in sorted(_files(run_dir)[step].items()) if len(idx) == k)


def _serialise(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _write(run_dir: RunDir, name: str, data: bytes, keep: int, shard: int, shards: int) -> str:
    run_dir.write_bytes(name, data)
    mine = sorted(step for step, by_count in _files(run_dir).items() if shard in by_count.get(shards, ()))
    for old in mine[:-keep]:
        run_dir.delete(checkpoint_name(old, shard, shards))
    return run_dir.uri(name)


def save_checkpoint(run_dir: RunDir, state: dict[str, Any], keep: int, shard: int = 0, shards: int = 1) -> str:
    name = checkpoint_name(int(state["step"]), shard, shards)
    return _write(run_dir, name, _serialise(state), keep, shard, shards)


def read_state(run_dir: RunDir, name: str) -> dict[str, Any]:
    """One checkpoint file's state (``weights_only``); a file that does not load is a ValueError naming it."""
    data = run_dir.read_bytes(name)
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:
        raise CheckpointError(f"checkpoint {run_dir.uri(name)} cannot be read: {exc}") from None


def load_checkpoint(run_dir: RunDir, step: int | None = None, shard: int | None = None,
                    shards: int | None = None) -> dict[str, Any] | None:
    """The checkpoint at ``step`` (default: the newest complete one); ``None`` when there is
    none. With ``shard``, that server shard's own file (of ``shards``); without, the whole
    model: a sharded checkpoint's parameters are merged (optimiser state is per shard)."""
    steps = checkpoint_steps(run_dir, shards)
    if not steps:
        return None
    step = steps[-1] if step is None else step
    if step not in steps:
        raise NotFound(f"{run_dir.uri(layout.CHECKPOINTS)}: no complete checkpoint of step {step} (have {steps})")
    count = shards or _shard_count(run_dir, step)
    if shard is not None or count == 1:
        return read_state(run_dir, checkpoint_name(step, shard or 0, count))
    parts = [read_state(run_dir, checkpoint_name(step, k, count)) for k in range(count)]
    return {"step": step, "skipped": parts[0]["skipped"],
            "params": {name: value for part in parts for name, value in part["params"].items()}}


class CheckpointWriter:
    """Writes checkpoints in a background thread, so slow storage (an object store) does not
    stall the step loop. The state is serialised to bytes at once (a snapshot of that step);
    the upload and the pruning of old files happen behind. One write is in flight at most: a
    new one first waits for the previous. Each file appears whole (write, then rename) or not
    at all, so a crash mid-write leaves the previous checkpoint as the newest."""

    def __init__(self, run_dir: RunDir, keep: int, shard: int = 0, shards: int = 1) -> None:
        self.run_dir, self.keep, self.shard, self.shards = run_dir, keep, shard, shards
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending: Future | None = None

    def submit(self, state: dict[str, Any]) -> None:
        data = _serialise(state)
        self.flush()
        name = checkpoint_name(int(state["step"]), self.shard, self.shards)
        self._pending = self._pool.submit(_write, self.run_dir, name, data, self.keep, self.shard, self.shards)

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

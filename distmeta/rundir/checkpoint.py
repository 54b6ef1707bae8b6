"""Checkpoints of the parameter server: params, optimiser state, step, counters.

The data-stream position is the step itself: a shard's episodes for step t are a pure
function of (seed, t, shard), so restoring the step restores the stream.

- **Files.** ``checkpoints/step-XXXXXXXX.pt``, or with K server shards
  (``runtime.server_shards``) one file per shard, ``step-XXXXXXXX.shard-k-of-K.pt``; a step's
  checkpoint is complete only when all K files exist. The optimiser state is stored by
  parameter name, so a checkpoint loads into any partition of the parameters.
- **Writes** go to a temporary name and are renamed into place, the file and its folder
  fsynced on local storage: a file is whole or absent. A failed write is retried
  (``checkpoint.retries`` times, waiting ``checkpoint.retry_wait_s``, doubled each time); one
  that keeps failing is reported, and the run stops (it never trains on without checkpoints).
- **Pruning** has one owner, server shard 0: after its own write it removes every checkpoint
  older than the newest ``keep`` complete ones, never the newest complete one.
- **Restores** take the newest complete checkpoint that reads, of any shard count, and warn
  naming each file skipped; a run whose checkpoints all fail to read is refused in one line.

Loading uses ``torch.load(weights_only=True)``: no pickle of arbitrary objects.
"""

from __future__ import annotations

import io
import logging
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from distmeta.errors import CheckpointError, NotFound, short
from distmeta.rundir import layout
from distmeta.rundir.layout import checkpoint as checkpoint_name
from distmeta.rundir.storage import RunDir

log = logging.getLogger(__name__)
TMP_PREFIX = ".tmp-"


def _files(run_dir: RunDir) -> dict[int, dict[int, set[int]]]:
    """step -> shard count -> the shard indices written."""
    found: dict[int, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    for name in run_dir.list(layout.CHECKPOINTS):
        if m := layout.CHECKPOINT_PATTERN.match(name):
            found[int(m[1])][int(m[3] or 1)].add(int(m[2] or 0))
    return found


def complete(run_dir: RunDir) -> dict[int, int]:
    """Steps with a complete checkpoint -> its shard count (the smallest, should there be two)."""
    out = {}
    for step, by_count in _files(run_dir).items():
        counts = sorted(k for k, idx in by_count.items() if len(idx) == k)
        if counts:
            out[step] = counts[0]
    return dict(sorted(out.items()))


def checkpoint_steps(run_dir: RunDir, shards: int | None = None) -> list[int]:
    """Steps with a complete checkpoint (of ``shards`` server shards; any count if ``None``)."""
    return sorted(step for step, by_count in _files(run_dir).items()
                  if any(len(idx) == k and (shards is None or k == shards) for k, idx in by_count.items()))


def _serialise(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def read_state(run_dir: RunDir, name: str) -> dict[str, Any]:
    """One checkpoint file's state (``weights_only``); a file that does not load is a
    :class:`CheckpointError` naming it."""
    data = run_dir.read_bytes(name)
    try:
        state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as exc:
        raise CheckpointError(f"checkpoint {run_dir.uri(name)} cannot be read: {short(str(exc))}") from None
    if not isinstance(state, dict) or not isinstance(state.get("params"), dict):
        raise CheckpointError(f"checkpoint {run_dir.uri(name)} cannot be read: not a distmeta checkpoint")
    return state


def optimizer_by_name(state: dict[str, Any]) -> dict[str, Any]:
    """A file's optimiser state keyed by parameter name (older files key it by position in the
    file's own parameters)."""
    opt = state.get("optimizer") or {}
    if opt.get("by_name"):
        return opt
    names = list(state["params"])
    return {"by_name": True, "param_groups": [{k: v for k, v in g.items() if k != "params"}
                                              for g in opt.get("param_groups", [])],
            "state": {names[int(i)]: s for i, s in (opt.get("state") or {}).items()}}


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One whole-model state from the server shards' states: parameters and optimiser state
    merged by name."""
    optimizers = [optimizer_by_name(p) for p in parts]
    return {"step": int(parts[0]["step"]), "skipped": int(parts[0].get("skipped", 0)),
            "params": {n: v for p in parts for n, v in p["params"].items()},
            "optimizer": {"by_name": True, "param_groups": optimizers[0]["param_groups"],
                          "state": {n: s for o in optimizers for n, s in o["state"].items()}}}


def read_step(run_dir: RunDir, step: int, count: int) -> dict[str, Any]:
    """The whole model's state at ``step`` from its ``count`` shard files."""
    return merge([read_state(run_dir, checkpoint_name(step, k, count)) for k in range(count)])


def newest_readable(run_dir: RunDir, at_most: int | None = None) -> dict[str, Any] | None:
    """The newest complete checkpoint (at or before step ``at_most``) that reads; each one
    skipped is named in a warning; ``None`` when there is none; a run whose checkpoints all
    fail to read is a :class:`CheckpointError`."""
    failures = []
    for step, count in reversed(complete(run_dir).items()):
        if at_most is not None and step > at_most:
            continue
        try:
            return read_step(run_dir, step, count)
        except (CheckpointError, NotFound) as exc:
            log.warning("skipping the checkpoint of step %d: %s", step, exc)
            failures.append(str(exc))
    if failures:
        raise CheckpointError(f"{run_dir.uri(layout.CHECKPOINTS)}: no checkpoint reads ({'; '.join(failures)}); "
                              "restore one, or start the run in a new --run-dir")
    return None


def load_checkpoint(run_dir: RunDir, step: int | None = None, shard: int | None = None,
                    shards: int | None = None) -> dict[str, Any] | None:
    """The whole model's checkpoint at ``step`` (default: the newest complete one that reads);
    ``None`` when there is none. With ``shard``, that server shard's own file of ``shards``."""
    if shard is not None:
        return read_state(run_dir, checkpoint_name(step or 0, shard, shards or 1))
    if step is None:
        return newest_readable(run_dir)
    steps = complete(run_dir)
    if step not in steps:
        raise NotFound(f"{run_dir.uri(layout.CHECKPOINTS)}: no complete checkpoint of step {step} (have {list(steps)})")
    return read_step(run_dir, step, steps[step])


def save_checkpoint(run_dir: RunDir, state: dict[str, Any], keep: int, shard: int = 0, shards: int = 1) -> str:
    """Write one checkpoint file now (no retries), and prune as its owner does."""
    name = checkpoint_name(int(state["step"]), shard, shards)
    run_dir.write_bytes(name, _serialise(state))
    if shard == 0:
        prune(run_dir, keep)
    return run_dir.uri(name)


def prune(run_dir: RunDir, keep: int) -> None:
    """Remove every checkpoint file older than the newest ``keep`` complete checkpoints."""
    steps = list(complete(run_dir))
    if not steps:
        return
    oldest_kept = steps[-keep:][0]
    for step, by_count in _files(run_dir).items():
        if step < oldest_kept:
            for count, shards in by_count.items():
                for k in shards:
                    run_dir.delete(checkpoint_name(step, k, count))


def clean_temporary(run_dir: RunDir) -> None:
    """Remove the temporary files that interrupted writes left in ``checkpoints/``."""
    for name in run_dir.list(layout.CHECKPOINTS):
        if name.startswith(TMP_PREFIX):
            run_dir.delete(f"{layout.CHECKPOINTS}/{name}")


@dataclass(frozen=True)
class WritePolicy:
    keep: int = 3
    retries: int = 3
    retry_wait_s: float = 1.0


class CheckpointStorageError(CheckpointError):
    """Checkpoints could not be written, through every retry."""


class CheckpointWriter:
    """Writes checkpoints in a background thread, so slow storage (an object store) does not
    stall the step loop. The state is serialised to bytes at once (a snapshot of that step);
    the upload (retried), and the pruning of old files, happen behind. One write is in flight
    at most. ``failures`` counts failed attempts; ``error`` is set once a write failed through
    every retry, after which nothing more is written."""

    def __init__(self, run_dir: RunDir, keep: int, shard: int = 0, shards: int = 1, *,
                 retries: int = 3, retry_wait_s: float = 1.0) -> None:
        self.run_dir, self.shard, self.shards = run_dir, shard, shards
        self.policy = WritePolicy(keep, retries, retry_wait_s)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending: Future | None = None
        self.failures = 0
        self.error: str | None = None

    def _write(self, name: str, data: bytes) -> str:
        wait = self.policy.retry_wait_s
        for attempt in range(self.policy.retries + 1):
            try:
                self.run_dir.write_bytes(name, data)
                if self.shard == 0:
                    prune(self.run_dir, self.policy.keep)
                return self.run_dir.uri(name)
            except Exception as exc:  # any storage error: retried, then reported
                self.failures += 1
                last = f"{type(exc).__name__}: {short(str(exc))}"
                log.warning("checkpoint write %s failed (attempt %d of %d): %s", self.run_dir.uri(name),
                            attempt + 1, self.policy.retries + 1, last)
                if attempt < self.policy.retries:
                    time.sleep(wait)
                    wait *= 2
        self.error = (f"checkpoints could not be written to {self.run_dir.uri(layout.CHECKPOINTS)} "
                      f"({self.policy.retries + 1} attempts; the last: {last})")
        raise CheckpointStorageError(self.error)

    def submit(self, state: dict[str, Any]) -> None:
        """Start writing ``state`` (after the write in flight); nothing once storage failed."""
        data = _serialise(state)
        try:
            self.flush()
        except CheckpointStorageError:
            return
        if self.error is None:
            name = checkpoint_name(int(state["step"]), self.shard, self.shards)
            self._pending = self._pool.submit(self._write, name, data)

    def flush(self) -> str | None:
        """Wait for the write in flight; its URI (``None`` when there was none). A write that
        failed through every retry raises :class:`CheckpointStorageError` here."""
        pending, self._pending = self._pending, None
        if pending is None:
            if self.error is not None:
                raise CheckpointStorageError(self.error)
            return None
        return pending.result()

    def save(self, state: dict[str, Any]) -> str:
        """Write now and wait: for the last checkpoint of a run, or before stopping."""
        self.submit(state)
        uri = self.flush()
        if uri is None:
            raise CheckpointStorageError(self.error or "the checkpoint was not written")
        return uri

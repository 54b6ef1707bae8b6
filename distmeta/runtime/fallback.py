"""When checkpoints cannot be written, the run stops and loses nothing.

A server shard whose checkpoint write fails through every retry says so with its step's
stats (or its final checkpoint fails): the driver stops submitting, takes the servers' state
at their step and writes it, as a run directory of its own, to a local folder
(``checkpoint.fallback_dir``, else ``~/.cache/distmeta/fallback``): its ``config.yaml``, the
checkpoint, ``tracking.json`` (so a resume continues the same MLflow run) and ``code.json``.
``distmeta train --resume FALLBACK`` continues from it, bit-identical to a run that never
failed. The MLflow run ends FAILED with the reason.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

from distmeta import plugins
from distmeta.config import RunConfig, validate
from distmeta.errors import DistmetaError
from distmeta.rundir import layout
from distmeta.rundir.checkpoint import merge, save_checkpoint
from distmeta.rundir.storage import RunDir
from distmeta.runtime.actors import Actors, server_get

log = logging.getLogger(__name__)
DEFAULT_FALLBACK = "~/.cache/distmeta/fallback"


class StorageFailed(DistmetaError, RuntimeError):
    """The run's checkpoints could not be written; its state is in the fallback folder."""

    def __init__(self, message: str, fallback: str, step: int) -> None:
        super().__init__(message)
        self.fallback, self.step = fallback, step


def is_storage_failure(exc: BaseException) -> bool:
    """A checkpoint write that failed through its retries, here or inside a server actor."""
    from distmeta.rundir.checkpoint import CheckpointStorageError

    cause = getattr(exc, "cause", None)
    return isinstance(exc, CheckpointStorageError) or isinstance(cause, CheckpointStorageError)


def write_fallback(cfg: RunConfig, rd: RunDir, actors: Actors, tracked: tuple[str | None, str | None],
                   reason: str) -> StorageFailed:
    """Write the servers' current state to a local run directory; the error that says where.
    ``tracked``: the MLflow run id and tracking URI the fallback continues."""
    parts = server_get([s.state.remote() for s in actors.servers], cfg, "state() for the fallback")
    state = merge(parts)
    folder = os.path.expanduser(cfg.checkpoint.fallback_dir or DEFAULT_FALLBACK)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    target = RunDir(f"{folder}/{layout.run_name(rd)}-step{state['step']}-{stamp}")
    target.makedirs()
    moved = validate({**cfg.to_dict(), "run_dir": target.location})
    target.write_text(layout.CONFIG, moved.to_yaml())
    save_checkpoint(target, state, keep=1)
    if tracked[0]:
        layout.write_tracking(target, tracked[0], tracked[1])
    roots = plugins.import_roots(cfg.import_paths() + plugins.given_paths())
    if roots:
        layout.write_code(target, roots)
    message = (f"{reason}; the run stopped at step {state['step']} and its state is in {target.location}: continue "
               f"with `distmeta train --resume {target.location}` (it continues the same MLflow run), or copy it "
               f"back to {rd.location} once the storage works")
    log.error("%s", message)
    return StorageFailed(message, target.location, int(state["step"]))


def failure_tags(error: StorageFailed) -> dict[str, Any]:
    return {"distmeta.failure": str(error)[:4000], "distmeta.fallback": error.fallback}

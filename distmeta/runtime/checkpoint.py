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


def save_checkpoint(run_dir: RunDir, state: dict[str, Any], keep: int) -> str:
    buf = io.BytesIO()
    torch.save(state, buf)
    name = checkpoint_name(int(state["step"]))
    run_dir.write_bytes(name, buf.getvalue())
    for old in checkpoint_steps(run_dir)[:-keep]:
        run_dir.delete(checkpoint_name(old))
    return run_dir.uri(name)


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

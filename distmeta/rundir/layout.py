"""Every file a run directory holds, named in one place.

A training run's directory (a local path or a ``pyarrow.fs`` URI)::

    config.yaml          the resolved config: what --resume, eval and the logged model read
    tracking.json        the MLflow run id and tracking URI of the run
    code.json            where the user's own code (named by import path) was imported from
    lease.json           the driver that holds the run (host, pid, heartbeat)
    train.log            everything the driver logged (local run directories)
    metrics.jsonl        every logged step's training metrics, one JSON line each (on a URI:
                         metrics/part-XXXXXX.jsonl)
    checkpoints/         step-XXXXXXXX.pt, or step-XXXXXXXX.shard-k-of-K.pt per server shard
    tracking/            the tracker's spill files (what could not be sent yet) and the
                         artifacts staged for upload (final.pt, model_params.pt, plots)

A sweep's directory holds ``config.yaml``'s siblings ``tracking.json``, ``summary.json``,
``best_config.yaml``, Ray Tune's state in ``tune/`` and one run directory per trial in
``trials/<trial id>``.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from distmeta.rundir.storage import RunDir, is_uri
from distmeta.uri import redact

CONFIG = "config.yaml"
TRACKING = "tracking.json"
CODE = "code.json"
LEASE = "lease.json"
LOG = "train.log"
METRICS = "metrics.jsonl"
METRICS_PARTS = "metrics"
CHECKPOINTS = "checkpoints"
SPILL = "tracking"
SPILLED_METRICS = "unsent_metrics.jsonl"
SPILLED_PARAMS = "unsent_params.json"
SPILLED = (SPILLED_METRICS, SPILLED_PARAMS)
FINAL_CHECKPOINT = "final.pt"
MODEL_PARAMS = "model_params.pt"
TRAINING_CURVES = "training_curves.png"
SUMMARY = "summary.json"
BEST_CONFIG = "best_config.yaml"
TRIALS = "trials"
TUNE = "tune"
CHECKPOINT_PATTERN = re.compile(r"^step-(\d{8})(?:\.shard-(\d+)-of-(\d+))?\.pt$")


def checkpoint(step: int, shard: int = 0, shards: int = 1) -> str:
    """``checkpoints/step-XXXXXXXX.pt``, or one server shard's file of a sharded checkpoint."""
    if shards == 1:
        return f"{CHECKPOINTS}/step-{step:08d}.pt"
    return f"{CHECKPOINTS}/step-{step:08d}.shard-{shard}-of-{shards}.pt"


def checkpoint_step(path: str) -> int | None:
    """The step of a checkpoint file's path (``.../checkpoints/step-00000200.pt``), else ``None``."""
    m = CHECKPOINT_PATTERN.match(path.rstrip("/").rsplit("/", 1)[-1])
    return int(m[1]) if m else None


def checkpoint_run_dir(path: str) -> str:
    """The run directory of a checkpoint file inside its ``checkpoints/`` folder; any other
    location is taken as the run directory itself."""
    parent, _, name = path.rstrip("/").rpartition("/")
    if checkpoint_step(name) is not None and parent.rsplit("/", 1)[-1] == CHECKPOINTS:
        return parent.rpartition("/")[0] or "."
    return path


def adaptation_plot(split: str) -> str:
    return f"adaptation_{split}.png"


def trial(trial_id: str) -> str:
    """A sweep trial's run directory, relative to the sweep's."""
    return f"{TRIALS}/{trial_id}"


def run_name(rd: RunDir) -> str:
    """The run's name: its directory's last component."""
    return rd.location.rstrip("/").rsplit("/", 1)[-1]


def metrics_part(n: int) -> str:
    return f"{METRICS_PARTS}/part-{n:06d}.jsonl"


def spill_dir(rd: RunDir) -> Path:
    """Where the tracker spills and stages files: ``RUN_DIR/tracking`` for a local run
    directory; for one on a URI a local staging folder, which the tracker keeps in step with
    ``RUN_DIR/tracking`` on the store."""
    if not is_uri(rd.location):
        return Path(rd.location) / SPILL
    return Path(tempfile.mkdtemp(prefix="distmeta-tracking-"))


def read_tracking(rd: RunDir) -> dict[str, Any] | None:
    """``tracking.json``: ``{"run_id": ..., "uri": ...}``, or ``None`` before a tracked run."""
    if not rd.exists(TRACKING):
        return None
    return json.loads(rd.read_text(TRACKING))


def write_tracking(rd: RunDir, run_id: str, uri: str | None) -> None:
    """``tracking.json``; credentials in the URI are never written (:func:`distmeta.uri.redact`)."""
    rd.write_text(TRACKING, json.dumps({"run_id": run_id, "uri": redact(uri) if uri else uri}))


def read_code(rd: RunDir) -> list[str]:
    """The folders the run imported the user's code from (``code.json``), or none."""
    if not rd.exists(CODE):
        return []
    return list(json.loads(rd.read_text(CODE)).get("import_from", []))


def write_code(rd: RunDir, folders: list[str]) -> None:
    rd.write_text(CODE, json.dumps({"import_from": folders}))

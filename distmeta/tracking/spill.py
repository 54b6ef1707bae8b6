"""Local spill files for tracking data that could not be sent, so nothing is lost.

``<spill_dir>/unsent_metrics.jsonl``: one JSON object a line per metric
(``key, value, step, timestamp`` in ms, and ``run_id``).
``<spill_dir>/unsent_params.json``: ``{run_id: {"params", "tags", "artifacts", "status"}}``,
merged on every write. Both are plain JSON (non-finite metric values are written as
``NaN``/``Infinity``, which Python's ``json`` reads back).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from distmeta.rundir.layout import SPILLED_METRICS, SPILLED_PARAMS
from distmeta.rundir.storage import FILE_MODE, private_folder

logger = logging.getLogger(__name__)

METRICS_FILE = SPILLED_METRICS
PARAMS_FILE = SPILLED_PARAMS
NO_RUN = "<no-run>"


class MetricRecord(NamedTuple):
    """One metric value, the unit both sent to MLflow and spilled."""

    key: str
    value: float
    step: int
    timestamp: int


class Spill:
    """Append-only record of unsent metrics, params, tags, artifacts and final status."""

    def __init__(self, spill_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(spill_dir)
        self.metrics_path = self.dir / METRICS_FILE
        self.params_path = self.dir / PARAMS_FILE

    def write_metrics(self, run_id: str | None, records: Iterable[MetricRecord]) -> int:
        """Append ``records`` to the metrics file; return how many were written."""
        lines = [
            json.dumps({**r._asdict(), "run_id": run_id or NO_RUN}) + "\n" for r in records
        ]
        if not lines:
            return 0
        private_folder(self.dir)
        fd = os.open(self.metrics_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.writelines(lines)
            fh.flush()
            os.fsync(fh.fileno())
        return len(lines)

    def read_metrics(self, run_id: str | None) -> list[MetricRecord]:
        """Return the spilled metrics of ``run_id`` (skipping unreadable lines with a warning)."""
        if not self.metrics_path.exists():
            return []
        wanted = run_id or NO_RUN
        records: list[MetricRecord] = []
        with self.metrics_path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                try:
                    row = json.loads(line)
                    if row.get("run_id", NO_RUN) == wanted:
                        records.append(MetricRecord(
                            str(row["key"]), float(row["value"]),
                            int(row["step"]), int(row["timestamp"])))
                except (ValueError, KeyError, TypeError) as exc:
                    logger.warning("%s line %d is not a metric record (%s); skipped",
                                   self.metrics_path, lineno, exc)
        return records

    def drop_metrics(self, run_id: str | None) -> None:
        """Remove the spilled metrics of ``run_id``, keeping other runs' lines."""
        if not self.metrics_path.exists():
            return
        wanted = run_id or NO_RUN
        with self.metrics_path.open(encoding="utf-8") as fh:
            keep = [line for line in fh if not _line_is_for(line, wanted)]
        if keep:
            tmp = self.metrics_path.with_suffix(".jsonl.tmp")
            _write_private(tmp, "".join(keep))
            tmp.replace(self.metrics_path)
        else:
            self.metrics_path.unlink()

    def write_run_info(self, run_id: str | None, **fields: Any) -> None:
        """Merge ``fields`` (``params``/``tags`` dicts, ``artifacts`` list, ``status``) into
        the run's entry in the params file, written atomically (temp file, then rename)."""
        data = self.read_run_info()
        entry = data.setdefault(run_id or NO_RUN, {})
        for name, value in fields.items():
            if isinstance(value, dict):
                entry.setdefault(name, {}).update(value)
            elif isinstance(value, list):
                entry.setdefault(name, []).extend(value)
            else:
                entry[name] = value
        private_folder(self.dir)
        tmp = self.params_path.with_suffix(".json.tmp")
        _write_private(tmp, json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(self.params_path)

    def replace_run_info(self, data: dict[str, dict[str, Any]]) -> None:
        """Write the params file as ``data`` (removed when empty), atomically."""
        if not data:
            if self.params_path.exists():
                self.params_path.unlink()
            return
        private_folder(self.dir)
        tmp = self.params_path.with_suffix(".json.tmp")
        _write_private(tmp, json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(self.params_path)

    def read_run_info(self) -> dict[str, dict[str, Any]]:
        """Return the params file's content (``{}`` when absent or unreadable)."""
        if not self.params_path.exists():
            return {}
        try:
            data = json.loads(self.params_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            logger.warning("%s is not valid JSON (%s); starting a fresh one", self.params_path, exc)
            return {}
        return data if isinstance(data, dict) else {}


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_json(data: Any, root: Path, relative: str) -> Path:
    """Write ``data`` as JSON to ``root/relative`` and return the path.

    Numbers from numpy or torch (anything with ``tolist``) are converted; other unknown
    objects are written with ``str``.

    Raises:
        ValueError: ``relative`` is absolute or leaves ``root`` (e.g. ``../x.json``).
    """
    rel = Path(relative)
    if rel.is_absolute() or ".." in rel.parts or not rel.name:
        raise ValueError(f"artifact file {relative!r} must be a relative path inside the run")
    path = root / rel
    private_folder(path.parent)
    _write_private(path, json.dumps(data, indent=1, default=_to_json))
    return path


def _to_json(obj: Any) -> Any:
    """JSON fallback: ``tolist()`` for arrays and tensors, ``str`` for anything else."""
    return obj.tolist() if hasattr(obj, "tolist") else str(obj)


def _line_is_for(line: str, run_id: str) -> bool:
    """Whether a metrics-file line belongs to ``run_id`` (unreadable lines are kept)."""
    try:
        return json.loads(line).get("run_id", NO_RUN) == run_id
    except (ValueError, AttributeError):
        return False

"""The tracker interface the training driver writes to, and a tracker that records nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")


@runtime_checkable
class Tracker(Protocol):
    """One experiment-tracking run, written only by the training driver.

    ``start`` opens (or resumes) the run and returns its id (``None`` when nothing is
    recorded); ``log_metrics`` buffers one step's scalars; ``flush`` sends the buffer;
    ``end`` flushes and closes the run. No method raises because the tracking backend failed.
    """

    run_id: str | None
    tracking_uri: str | None

    def start(
        self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str],
        resume_run_id: str | None = None,
    ) -> str | None:
        """Open a run (or reopen ``resume_run_id``) with ``params`` (nested, flattened here)."""
        ...

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        """Buffer ``metrics`` at ``step``; sent when the buffer is large or on ``flush``."""
        ...

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        """Upload the file or directory ``local_path`` under ``artifact_path``."""
        ...

    def log_dataset(self, name: str, digest: str, source_type: str, source: str,
                    profile: Mapping[str, Any], context: str = "training") -> None:
        """Record the run's dataset as an input, with its digest and source."""
        ...

    def log_dict(self, data: Any, artifact_file: str) -> None:
        """Store JSON-serialisable ``data`` (e.g. an evaluation table) as ``artifact_file``."""
        ...

    def log_model(self, config_path: str, params_path: str, example: Mapping[str, Any],
                  register: str | None = None, code: Sequence[str] = ()) -> str | None:
        """Log the run's final parameters as a model that adapts and predicts (with the user's
        ``code``; registered as ``register`` when given); its URI, or ``None`` when nothing was
        logged."""
        ...

    def end_children(self, status_by_run_dir: Mapping[str, str]) -> int:
        """End the runs nested under this one that are still open, with the status given for
        their run directory; how many were ended."""
        ...

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set tags on the open run (a failure's reason, say)."""
        ...

    def flush(self) -> None:
        """Send every buffered metric now."""
        ...

    def end(self, status: str = "FINISHED") -> None:
        """Flush and close the run with ``status`` (FINISHED, FAILED or KILLED)."""
        ...


def check_status(status: str) -> str:
    """Return ``status`` if it is a terminal run status, else raise ``ValueError`` naming it."""
    if status not in RUN_STATUSES:
        raise ValueError(f"run status {status!r} is not one of {', '.join(RUN_STATUSES)}")
    return status


class NullTracker:
    """A :class:`Tracker` that records nothing (``run_id`` stays ``None``)."""

    run_id: str | None = None
    tracking_uri: str | None = None

    def start(
        self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str],
        resume_run_id: str | None = None,
    ) -> str | None:
        """Record nothing; return ``None``."""
        return None

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        """Drop the metrics."""

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        """Drop the artifact."""

    def log_dataset(self, name: str, digest: str, source_type: str, source: str,
                    profile: Mapping[str, Any], context: str = "training") -> None:
        """Drop the dataset."""

    def log_dict(self, data: Any, artifact_file: str) -> None:
        """Drop the data."""

    def log_model(self, config_path: str, params_path: str, example: Mapping[str, Any],
                  register: str | None = None, code: Sequence[str] = ()) -> str | None:
        """Log nothing; return ``None``."""
        return None

    def end_children(self, status_by_run_dir: Mapping[str, str]) -> int:
        """No nested runs: 0."""
        return 0

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Drop the tags."""

    def flush(self) -> None:
        """Nothing to send."""

    def end(self, status: str = "FINISHED") -> None:
        """Check ``status`` and do nothing else."""
        check_status(status)

"""Reading a run's metric history back from its MLflow run (for ``distmeta compare``)."""

from __future__ import annotations

from distmeta.errors import NotFound
from distmeta.tracking.mlflow_tracker import resolve_tracking_uri


def metric_history(uri: str | None, run_id: str, metric: str) -> list[tuple[int, float]]:
    """``(step, value)`` of ``metric`` in run ``run_id``, by step; ``train/<metric>`` is tried
    when the plain name has no points; :class:`NotFound` names the metric when neither has any."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=resolve_tracking_uri(uri))
    for name in (metric, f"train/{metric}"):
        points = client.get_metric_history(run_id, name)
        if points:
            return sorted((int(p.step), float(p.value)) for p in points)
    raise NotFound(f"run {run_id}: no metric {metric!r} (nor 'train/{metric}')")

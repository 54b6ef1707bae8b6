"""MLflow system metrics (CPU, memory, disk, network, GPU) for an explicit run id.

MLflow's ``mlflow.enable_system_metrics_logging()`` only acts on runs started with the fluent
``mlflow.start_run``; with ``MlflowClient`` and explicit run ids we start MLflow's own
``SystemMetricsMonitor(run_id)`` thread ourselves. It samples every ``sampling_interval_s``
seconds and logs ``system/...`` metrics; it needs ``psutil`` (GPU metrics also ``nvidia-ml-py``).
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

logger = logging.getLogger(__name__)


def system_metrics_available() -> bool:
    """Whether MLflow's system metrics can run here (``psutil`` is importable)."""
    return importlib.util.find_spec("psutil") is not None


def start_system_metrics(
    run_id: str, tracking_uri: str, resume: bool = False, sampling_interval_s: float = 10.0,
    node_id: str | None = None,
) -> Any | None:
    """Start a system-metrics monitor thread for ``run_id``; ``None`` (and a warning) if it can't.

    With ``resume`` the ``system/*`` step counter continues after the run's last one.
    """
    if not system_metrics_available():
        logger.warning("system metrics requested but psutil is not installed; "
                       "`pip install psutil` to record CPU/memory/GPU use")
        return None
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(
            run_id, sampling_interval=sampling_interval_s, resume_logging=resume,
            node_id=node_id, tracking_uri=tracking_uri,
        )
        monitor.start()
    except Exception as exc:  # noqa: BLE001 - system metrics are optional
        logger.warning("could not start MLflow system metrics for run %s: %s", run_id, exc)
        return None
    return monitor


def stop_system_metrics(monitor: Any | None) -> None:
    """Stop a monitor from :func:`start_system_metrics` and flush its last samples."""
    if monitor is None:
        return
    try:
        monitor.finish()
    except Exception as exc:  # noqa: BLE001 - never let system metrics break a run's end
        logger.warning("could not stop MLflow system metrics cleanly: %s", exc)

"""Joining a Ray cluster, or starting a local one that stays on the loopback interface.

When distmeta starts Ray itself, every Ray process binds 127.0.0.1 (the dashboard too):
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set before Ray is imported. When it joins an
existing cluster (``--address``, or ``RAY_ADDRESS`` as ``ray job submit`` sets), it changes
nothing about how that cluster binds.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"


@dataclass
class RaySession:
    started_here: bool
    address: str
    dashboard_url: str | None

    def shutdown(self) -> None:
        import ray

        if self.started_here and ray.is_initialized():
            ray.shutdown()


def loopback_env() -> None:
    """Environment for a local Ray that binds only loopback; call before importing ray."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _ray_log_level() -> int:
    """Ray's own driver-side log level: what the CLI set for the ``ray`` logger (WARNING unless
    ``-v``), so Ray's INFO chatter stays out of the run's log by default."""
    return logging.getLogger("ray").getEffectiveLevel()


def connect(address: str | None = None, num_cpus: float | None = None, num_gpus: float | None = None,
            object_store_mb: int = 512, dashboard: bool = True) -> RaySession:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``); otherwise start a local one."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        loopback_env()
    level = _ray_log_level()
    import ray

    logging.getLogger("ray").setLevel(level)  # importing Ray resets its logger to INFO

    if ray.is_initialized():
        ctx = ray.get_runtime_context()
        return RaySession(False, ctx.gcs_address, None)
    if address is not None:
        info = ray.init(address=address, log_to_driver=True, logging_level=level)
        log.info("joined Ray cluster at %s", address)
        return RaySession(False, address, getattr(info, "dashboard_url", None))
    cpus = max(float(os.cpu_count() or 1), num_cpus or 0.0)
    # address="local": a new instance of our own, even where another one (`ray start`, another
    # run) is up on this machine; joining one is what --address / RAY_ADDRESS are for.
    info = ray.init(address="local", num_cpus=int(-(-cpus // 1)), num_gpus=num_gpus, include_dashboard=dashboard,
                    dashboard_host=LOOPBACK, object_store_memory=object_store_mb * 2**20,
                    log_to_driver=True, logging_level=level)
    log.info("started a local Ray instance (%s CPUs) on %s", cpus, LOOPBACK)
    return RaySession(True, ray.get_runtime_context().gcs_address, getattr(info, "dashboard_url", None))


def live_nodes() -> int:
    """How many nodes of the connected cluster are alive."""
    import ray

    return len([n for n in ray.nodes() if n.get("Alive")])


def job_tags() -> dict[str, str]:
    """The Ray job this driver runs as, for the run's tags."""
    import ray

    return {"ray.job_id": ray.get_runtime_context().get_job_id()} if ray.is_initialized() else {}

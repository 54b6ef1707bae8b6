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


def connect(address: str | None = None, num_cpus: float | None = None, runtime_env: dict | None = None,
            object_store_mb: int = 512, dashboard: bool = True) -> RaySession:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``); otherwise start a local one. The
    job's ``runtime_env`` reaches every process it starts (sweep trials too)."""
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
        info = ray.init(address=address, log_to_driver=True, logging_level=level, runtime_env=runtime_env)
        log.info("joined Ray cluster at %s", address)
        return RaySession(False, address, getattr(info, "dashboard_url", None))
    cpus = max(float(os.cpu_count() or 1), num_cpus or 0.0)
    # address="local": a new instance of our own, even where another one (`ray start`, another
    # run) is up on this machine; joining one is what --address / RAY_ADDRESS are for.
    info = ray.init(address="local", num_cpus=int(-(-cpus // 1)), include_dashboard=dashboard, dashboard_host=LOOPBACK,
                    object_store_memory=object_store_mb * 2**20, log_to_driver=True, logging_level=level,
                    runtime_env=runtime_env)
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


def uploaded(runtime_env: dict | None) -> dict | None:
    """``runtime_env`` with its local paths (``py_modules``, ``working_dir``) uploaded to the
    cluster, as ``ray.init`` does for a job's: an actor's own runtime_env may then carry them,
    also when this process joined (or started) Ray before the run was known."""
    if not runtime_env:
        return None
    import ray
    from ray._private.runtime_env.py_modules import upload_py_modules_if_needed
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    scratch = ray._private.worker.global_worker.node.get_runtime_env_dir_path()
    env = upload_py_modules_if_needed(dict(runtime_env), include_gitignore=True, scratch_dir=scratch, logger=log)
    return upload_working_dir_if_needed(env, include_gitignore=True, scratch_dir=scratch, logger=log)

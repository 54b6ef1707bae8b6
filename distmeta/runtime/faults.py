"""The fault policy: what a run does when a worker or the parameter server fails a step.

- **Retry.** A step's logical shards that failed (their worker died, or hung past
  ``runtime.step_timeout_s`` and was restarted) are computed again, up to
  ``runtime.max_step_retries`` times; the shards that succeeded are kept.
- **Reassign.** Who recomputes them: the live workers (``on_worker_loss: reassign``), or the
  same worker once Ray has restarted it (``wait``). A worker that answers a ping again
  rejoins the pool.
- **Resync.** A server whose ``apply`` failed, or was rejected as stale, has restored its
  newest checkpoint; the loop starts again from the server's step. The same step failing
  more than ``max_step_retries + 1`` times ends the run.

Episodes and sums are pure functions of (seed, step, logical shard), so none of this changes
the parameters, only how fast they come. Ray is imported on first use, after
:func:`distmeta.runtime.cluster.connect` has chosen how it binds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from distmeta.config.sections import RuntimeConfig
from distmeta.runtime.server import StaleStepError

log = logging.getLogger(__name__)
PING_TIMEOUT_S = 2.0


class StepFailed(RuntimeError):
    """A step could not be completed within ``runtime.max_step_retries`` retries."""


@dataclass
class Counters:
    retries: int = 0
    worker_failures: int = 0
    server_restarts: int = 0

    def metrics(self) -> dict[str, float]:
        return {"retries": float(self.retries), "worker_failures": float(self.worker_failures),
                "server_restarts": float(self.server_restarts)}


@dataclass
class Pool:
    """The worker actors, which of them are believed alive, and their placement group."""

    actors: list[Any]
    placement_group: Any
    down: set[int] = field(default_factory=set)
    owns_placement_group: bool = True

    def live(self) -> list[int]:
        return [i for i in range(len(self.actors)) if i not in self.down]


def is_actor_failure(exc: BaseException) -> bool:
    import ray

    return isinstance(exc, (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError,
                            ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError,
                            ray.exceptions.OwnerDiedError))


def is_stale(exc: BaseException) -> bool:
    """A StaleStepError, raised here or inside an actor (Ray wraps it, keeping it as ``cause``)."""
    return isinstance(exc, StaleStepError) or isinstance(getattr(exc, "cause", None), StaleStepError)


def is_server_failure(exc: BaseException) -> bool:
    """An ``apply`` that failed in a way a restored server recovers from."""
    import ray

    return is_stale(exc) or is_actor_failure(exc) or isinstance(exc, ray.exceptions.RayTaskError)


class FaultPolicy:
    """Retry, reassign and resync, with the counts of each (``counters``)."""

    def __init__(self, rt: RuntimeConfig, pool: Pool) -> None:
        self.rt, self.pool = rt, pool
        self.counters = Counters()
        self.resync_step, self.resyncs = -1, 0
        self.incarnations: list[float] = []

    def attempts(self) -> range:
        """The tries a step's shards get: the first and ``max_step_retries`` retries."""
        return range(self.rt.max_step_retries + 1)

    # -- workers -----------------------------------------------------------------------------
    def status(self, ref: Any, ready: bool, worker: int, step: int) -> dict[str, Any] | None:
        """A worker's status for ``step``, or ``None`` when it hung (it is restarted, so its
        pending results fail now) or died; either way it leaves the pool until it answers."""
        import ray

        if not ready:
            log.warning("step %d: worker %d did not answer within %.0f s; restarting it", step, worker,
                        self.rt.step_timeout_s)
            ray.kill(self.pool.actors[worker], no_restart=False)
            self.pool.down.add(worker)
            return None
        try:
            return ray.get(ref, timeout=self.rt.step_timeout_s)  # ready: a fetch at most
        except Exception as exc:
            if not is_actor_failure(exc):
                raise
            log.warning("step %d: worker %d lost (%s)", step, worker, type(exc).__name__)
            self.counters.worker_failures += 1
            self.pool.down.add(worker)
            return None

    def retry(self, step: int, failed: list[int]) -> None:
        self.counters.retries += len(failed)
        log.warning("step %d: retrying logical shards %s", step, failed)

    def give_up(self, step: int) -> StepFailed:
        return StepFailed(f"step {step}: logical shards failed {self.rt.max_step_retries + 1} times; "
                          "see the worker logs")

    def workers(self, attempt: int) -> list[int]:
        """The workers to compute on at ``attempt`` (0: the first try): the live ones; under
        ``on_worker_loss: wait`` a retry waits (up to ``step_timeout_s``) for the lost ones."""
        wait = self.rt.on_worker_loss == "wait" and attempt > 0
        deadline = time.monotonic() + self.rt.step_timeout_s
        while True:
            self.revive(wait_s=PING_TIMEOUT_S if wait or not self.pool.live() else 0.0)
            live = self.pool.live()
            if live and not (wait and self.pool.down):
                return live
            if time.monotonic() > deadline:
                if live:
                    return live
                raise StepFailed(f"no worker came back within runtime.step_timeout_s={self.rt.step_timeout_s}")

    def revive(self, wait_s: float = 0.0) -> None:
        """Move workers that answer a ping back into the pool."""
        import ray

        pings = {i: self.pool.actors[i].ping.remote() for i in self.pool.down}
        if not pings:
            return
        ready, _ = ray.wait(list(pings.values()), num_returns=len(pings), timeout=max(wait_s, 0.05))
        for i, ref in pings.items():
            if ref in ready:
                try:
                    ray.get(ref, timeout=PING_TIMEOUT_S)
                    self.pool.down.discard(i)
                except Exception as exc:  # still dead or restarting
                    log.debug("worker %d not back yet: %s", i, exc)

    # -- the server --------------------------------------------------------------------------
    def resync(self, step: int, exc: BaseException) -> None:
        """The server did not apply ``step`` and restored its checkpoint: count it, and fail
        the run when the same step has failed too often (the caller then re-syncs)."""
        self.counters.server_restarts += 1
        self.resyncs = self.resyncs + 1 if self.resync_step == step else 1
        self.resync_step = step
        if self.resyncs > self.rt.max_step_retries + 1:
            raise StepFailed(f"step {step}: the parameter server failed it {self.resyncs} times: {exc}") from exc
        log.warning("step %d: the parameter server did not apply it (%s); re-syncing from its checkpoint",
                    step, type(exc).__name__)

    def count_restarts(self, incarnations: list[float]) -> None:
        """A server restarted by Ray whose retried ``apply`` went through unnoticed still counts."""
        if self.incarnations and incarnations != self.incarnations:
            restarted = sum(a != b for a, b in zip(incarnations, self.incarnations, strict=True))
            self.counters.server_restarts += restarted
            log.warning("%d parameter server(s) restarted and restored their checkpoint", restarted)
        self.incarnations = incarnations

    def reset(self) -> None:
        """After a re-sync: the servers' incarnations are read afresh."""
        self.incarnations = []

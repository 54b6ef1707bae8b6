"""The training driver: one parameter server, N workers, the step loop, fault handling.

loop: ``state = ps.get()`` -> ``w.compute(step, state, shards)`` for each worker ->
``ps.apply(step, *results)``. Workers' gradients go to the server through the object
store; only small status objects (metric sums, timings) come back to the driver.

Faults: a worker that dies (or times out) mid-step has its logical shards recomputed, by
the surviving workers (``on_worker_loss: reassign``) or by itself once Ray has restarted it
(``wait``); the retry is counted. A server that dies is restarted by Ray and restores its
newest checkpoint; the driver re-reads the server's step and goes on. Since episodes and
sums are pure functions of (seed, step, shard), the final parameters are bit-identical to a
fault-free run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from distmeta.config import RunConfig
from distmeta.runtime.server import ParameterServer, StaleStepError
from distmeta.runtime.worker import MetaWorker
from distmeta.types import Params

log = logging.getLogger(__name__)
PING_TIMEOUT_S = 2.0


class StepFailed(RuntimeError):
    """A step could not be completed within ``runtime.max_step_retries`` retries."""


@dataclass
class Counters:
    retries: int = 0
    worker_failures: int = 0
    server_restarts: int = 0


@dataclass
class Pool:
    """The worker actors, which of them are believed alive, and their placement group."""

    actors: list[Any]
    placement_group: Any
    down: set[int] = field(default_factory=set)

    def live(self) -> list[int]:
        return [i for i in range(len(self.actors)) if i not in self.down]


def _ray():
    import ray

    return ray


def _is_actor_failure(exc: BaseException) -> bool:
    ray = _ray()
    return isinstance(exc, (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError,
                            ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError,
                            ray.exceptions.OwnerDiedError))


def _is_stale(exc: BaseException) -> bool:
    """A StaleStepError, raised here or inside an actor (Ray wraps it, keeping it as ``cause``)."""
    return isinstance(exc, StaleStepError) or isinstance(getattr(exc, "cause", None), StaleStepError)


def assign(shards: list[int], workers: list[int]) -> dict[int, list[int]]:
    """Deal logical shards round-robin over workers (the result does not depend on it)."""
    plan: dict[int, list[int]] = {w: [] for w in workers}
    for i, shard in enumerate(shards):
        plan[workers[i % len(workers)]].append(shard)
    return {w: s for w, s in plan.items() if s}


class StepRunner:
    """Runs one step's computation over the pool, retrying lost shards."""

    def __init__(self, cfg: RunConfig, server: Any, pool: Pool, counters: Counters,
                 on_dispatch: Callable[[int, StepRunner], None] | None = None) -> None:
        self.cfg, self.server, self.pool, self.counters = cfg, server, pool, counters
        self.on_dispatch = on_dispatch

    def revive(self, wait_s: float = 0.0) -> None:
        """Move workers that answer a ping back into the pool."""
        ray = _ray()
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

    def compute(self, step: int, state_ref: Any) -> tuple[list[Any], dict[int, dict[str, float]], dict[str, float]]:
        """All logical shards of ``step``: (result refs for the server, per-shard metrics, timings)."""
        ray = _ray()
        todo = list(range(self.cfg.runtime.logical_shards))
        grads_refs: list[Any] = []
        metrics: dict[int, dict[str, float]] = {}
        timing = {"compute_s": 0.0, "skipped_files": 0.0}
        for attempt in range(self.cfg.runtime.max_step_retries + 1):
            workers = self._available(attempt)
            inflight = {}
            for w, shards in assign(todo, workers).items():
                status_ref, grads_ref = self.pool.actors[w].compute.options(num_returns=2).remote(step, state_ref, shards)
                inflight[status_ref] = (w, shards, grads_ref)
            if self.on_dispatch is not None and attempt == 0:
                self.on_dispatch(step, self)
            ready, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=self.cfg.runtime.step_timeout_s)
            todo = []
            for status_ref, (w, shards, grads_ref) in inflight.items():
                status = self._status(status_ref, ready, w, step)
                if status is None:
                    todo += shards
                    continue
                grads_refs.append(grads_ref)
                metrics.update(status["metrics"])
                timing["compute_s"] = max(timing["compute_s"], status["compute_s"])
                timing["skipped_files"] = max(timing["skipped_files"], len(status["skipped_files"]))
            if not todo:
                return grads_refs, metrics, timing
            self.counters.retries += len(todo)
            log.warning("step %d: retrying logical shards %s", step, sorted(todo))
        raise StepFailed(f"step {step}: logical shards {sorted(todo)} failed "
                         f"{self.cfg.runtime.max_step_retries + 1} times; see the worker logs")

    def _status(self, ref: Any, ready: list[Any], worker: int, step: int) -> dict[str, Any] | None:
        ray = _ray()
        if ref not in ready:
            log.warning("step %d: worker %d did not answer within %.0f s", step, worker, self.cfg.runtime.step_timeout_s)
            try:
                ray.cancel(ref)  # actor tasks cannot be force-cancelled; the late result is ignored
            except Exception as exc:
                log.debug("cancel: %s", exc)
            self.pool.down.add(worker)
            return None
        try:
            return ray.get(ref, timeout=self.cfg.runtime.step_timeout_s)  # ready: a fetch at most
        except Exception as exc:
            if _is_stale(exc):
                raise StaleStepError(str(exc)) from None
            if not _is_actor_failure(exc):
                raise
            log.warning("step %d: worker %d lost (%s)", step, worker, type(exc).__name__)
            self.counters.worker_failures += 1
            self.pool.down.add(worker)
            return None

    def _available(self, attempt: int) -> list[int]:
        wait = self.cfg.runtime.on_worker_loss == "wait" and attempt > 0
        deadline = time.monotonic() + self.cfg.runtime.step_timeout_s
        while True:
            self.revive(wait_s=PING_TIMEOUT_S if wait or not self.pool.live() else 0.0)
            live = self.pool.live()
            if live and not (wait and self.pool.down):
                return live
            if time.monotonic() > deadline:
                if live:
                    return live
                raise StepFailed(f"no worker came back within runtime.step_timeout_s={self.cfg.runtime.step_timeout_s}")


class ServerTimeout(StepFailed):
    """The parameter server did not answer within ``runtime.server_timeout_s``."""


def server_get(ref: Any, cfg: RunConfig, what: str) -> Any:
    """``ray.get`` of a server call, bounded by ``runtime.server_timeout_s``."""
    ray = _ray()
    timeout = cfg.runtime.server_timeout_s
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        raise ServerTimeout(f"the parameter server did not answer {what} within runtime.server_timeout_s={timeout:g} s; "
                            "see its log (ray logs, or the dashboard) and raise the key for a slow store") from None


def apply_step(server: Any, step: int, grads_refs: list[Any], counters: Counters,
               cfg: RunConfig) -> dict[str, float] | None:
    """Send the step to the server; ``None`` when the server restarted (the caller re-syncs)."""
    try:
        return server_get(server.apply.remote(step, *grads_refs), cfg, f"apply(step={step})")
    except ServerTimeout:
        raise
    except Exception as exc:
        if _is_stale(exc) or _is_actor_failure(exc):
            counters.server_restarts += 1
            log.warning("step %d: parameter server restarted (%s); resuming from its checkpoint", step, type(exc).__name__)
            return None
        raise


def final_params(server: Any, cfg: RunConfig) -> tuple[int, Params]:
    return server_get(server.get.remote(), cfg, "get()")


def make_actors(cfg: RunConfig, run_dir: str) -> tuple[Any, Pool]:
    """The server and the worker pool, as restartable actors; workers spread over nodes."""
    ray = _ray()
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    rt = cfg.runtime
    config = cfg.to_dict()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=True)
    server = ray.remote(ParameterServer).options(  # beside the driver, where the run dir is
        num_cpus=0, max_restarts=-1, max_task_retries=-1, scheduling_strategy=here).remote(config, run_dir)
    bundle = {"CPU": rt.cpus_per_worker} | ({"GPU": rt.gpus_per_worker} if rt.gpus_per_worker else {})
    pg = placement_group([bundle] * rt.workers, strategy="SPREAD" if rt.placement == "spread" else "PACK")
    ready, _ = ray.wait([pg.ready()], timeout=rt.step_timeout_s)
    if not ready:
        ray.util.remove_placement_group(pg)
        raise StepFailed(f"runtime.workers={rt.workers} x {bundle} cannot be placed on this cluster "
                         f"(resources: {ray.cluster_resources()}); lower runtime.workers or cpus_per_worker")
    actor = ray.remote(MetaWorker)
    workers = [actor.options(num_cpus=rt.cpus_per_worker, num_gpus=rt.gpus_per_worker, max_restarts=-1,
                             max_task_retries=0,
                             scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i)
                             ).remote(config) for i in range(rt.workers)]
    return server, Pool(workers, pg)


def release(server: Any, pool: Pool) -> None:
    ray = _ray()
    for a in [server, *pool.actors]:
        try:
            ray.kill(a)
        except Exception as exc:  # already gone
            log.debug("kill: %s", exc)
    try:
        ray.util.remove_placement_group(pool.placement_group)
    except Exception as exc:
        log.debug("remove_placement_group: %s", exc)

"""The actors of a run, their placement, and the driver's waits on them.

One parameter server (or ``runtime.server_shards`` of them), N worker actors in a placement
group spread over nodes, and on every node that hosts several workers an aggregator that
pre-sums their gradients (``runtime.node_aggregation``). All are restartable actors built
from plain classes at the call site. The step loop itself is :mod:`distmeta.runtime.pipeline`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from distmeta import plugins
from distmeta.config import RunConfig
from distmeta.errors import ConfigError, DistmetaError
from distmeta.runtime.cluster import uploaded
from distmeta.runtime.faults import Pool, StepFailed
from distmeta.runtime.server import ParameterServer
from distmeta.runtime.worker import MetaWorker, NodeAggregator
from distmeta.types import Params

log = logging.getLogger(__name__)


class StartFailed(DistmetaError, RuntimeError):
    """The run's actors did not start."""


class ServerTimeout(StepFailed):
    """The parameter server did not answer within ``runtime.server_timeout_s``."""


def server_get(ref: Any, cfg: RunConfig, what: str) -> Any:
    """``ray.get`` of a server call, bounded by ``runtime.server_timeout_s``."""
    import ray

    timeout = cfg.runtime.server_timeout_s
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        raise ServerTimeout(f"the parameter server did not answer {what} within runtime.server_timeout_s={timeout:g} s; "
                            "see its log (ray logs, or the dashboard) and raise the key for a slow store") from None


@dataclass
class Actors:
    """Everything a run started on the cluster."""

    servers: list[Any]
    pool: Pool
    aggregators: dict[str, Any] = field(default_factory=dict)  # node id -> aggregator
    node_of: dict[int, str] = field(default_factory=dict)  # worker -> node id


def sync_servers(servers: list[Any], cfg: RunConfig) -> int:
    """The step every server shard is at; after one of them restarted from its newest
    complete checkpoint, the others are brought back to that step too."""
    steps = [server_get(s.get_step.remote(), cfg, "get_step()") for s in servers]
    if len(set(steps)) == 1:
        return steps[0]
    step = min(steps)
    log.warning("server shards at steps %s: restoring all of them to step %d", steps, step)
    for s, at in zip(servers, steps, strict=True):
        if at != step:
            server_get(s.restore.remote(step), cfg, f"restore({step})")
    return step


def check_resources(cfg: RunConfig) -> None:
    """Fail at once, naming the keys, when the cluster cannot hold the workers; on an
    autoscaling cluster (``runtime.placement_wait_s > 0``) wait that long, logging."""
    import ray

    rt = cfg.runtime
    need = {"CPU": rt.workers * rt.cpus_per_worker, "GPU": rt.workers * rt.gpus_per_worker}
    keys = {"CPU": "runtime.cpus_per_worker", "GPU": "runtime.gpus_per_worker"}
    deadline = time.monotonic() + rt.placement_wait_s
    while True:
        have = ray.cluster_resources()
        short = {r: n for r, n in need.items() if n > have.get(r, 0.0) + 1e-9}
        if not short:
            return
        what = ", ".join(f"{n:g} {r} (runtime.workers={rt.workers} x {keys[r]}={n / rt.workers:g}; "
                         f"the cluster has {have.get(r, 0.0):g})" for r, n in short.items())
        if time.monotonic() >= deadline:
            raise ConfigError(f"the workers need {what}: lower runtime.workers or {'/'.join(keys[r] for r in short)}"
                             + (f", or raise runtime.placement_wait_s={rt.placement_wait_s:g} for an autoscaling "
                                "cluster" if rt.placement_wait_s else ""))
        log.info("waiting for the cluster to grow (runtime.placement_wait_s=%g): the workers need %s",
                 rt.placement_wait_s, what)
        time.sleep(min(10.0, max(deadline - time.monotonic(), 0.1)))


def runtime_env(cfg: RunConfig) -> dict[str, Any] | None:
    """Ray's ``runtime_env`` for every actor of the run: ``runtime.runtime_env``, with the local
    packages (or modules) that the config's import paths name added to ``py_modules``, so the
    user's code reaches every process on every node, a local Ray's as a cluster's."""
    env = dict(cfg.runtime.runtime_env or {})
    code = [c for c in plugins.local_code(cfg.import_paths() + plugins.given_paths())
            if c not in env.get("py_modules", [])]
    if code:
        env["py_modules"] = [*env.get("py_modules", []), *code]
        log.info("shipping %s to the actors (runtime_env py_modules)", ", ".join(code))
    return env or None


def make_actors(cfg: RunConfig, run_dir: str) -> Actors:
    """The server(s), the worker pool and the node aggregators, as restartable actors, with
    the run's runtime_env and the objects handed to :func:`distmeta.fit`."""
    import ray
    from ray.util.scheduling_strategies import (
        NodeAffinitySchedulingStrategy,
        PlacementGroupSchedulingStrategy,
    )

    rt = cfg.runtime
    config, given, env = cfg.to_dict(), plugins.given(), uploaded(runtime_env(cfg))
    pg, first = ray.util.get_current_placement_group(), 1  # inside a sweep trial: its bundles 1..N
    owned = pg is None
    if owned:
        check_resources(cfg)
        pg, first = worker_placement_group(cfg), 0
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=True)
    server_place = here if owned else PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)
    servers = [ray.remote(ParameterServer).options(  # beside the driver, where the run dir is
        num_cpus=0, max_restarts=-1, max_task_retries=-1, scheduling_strategy=server_place, runtime_env=env,
    ).remote(config, run_dir, k, given) for k in range(rt.server_shards)]
    actor = ray.remote(MetaWorker)
    workers = [actor.options(num_cpus=rt.cpus_per_worker, num_gpus=rt.gpus_per_worker, max_restarts=-1,
                             max_task_retries=0, runtime_env=env, scheduling_strategy=PlacementGroupSchedulingStrategy(
                                 pg, placement_group_bundle_index=first + i)).remote(config, given)
               for i in range(rt.workers)]
    actors = Actors(servers, Pool(workers, pg, owns_placement_group=owned))
    nodes = started([w.node_id.remote() for w in workers] + [s.get_step.remote() for s in servers], cfg)[:len(workers)]
    actors.node_of = {i: node for i, node in enumerate(nodes) if node}
    if rt.node_aggregation:
        nodes_used = list(actors.node_of.values())  # only across nodes: on one, it is a hop for nothing
        crowded = {n for n in nodes_used if nodes_used.count(n) > 1} if len(set(nodes_used)) > 1 else set()
        actors.aggregators = {n: ray.remote(NodeAggregator).options(
            num_cpus=0, max_restarts=-1, max_task_retries=-1,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n, soft=True)).remote(rt.logical_shards)
            for n in sorted(crowded)}
    return actors


def started(refs: list[Any], cfg: RunConfig) -> list[Any]:
    """The first answers of new actors; an actor whose constructor failed (it could not import
    the user's code, say) is one error naming its cause and where to look."""
    import ray

    try:
        return server_get(refs, cfg, "the new actors")
    except ray.exceptions.RayActorError as exc:
        cause = getattr(exc, "cause", None) or exc
        first = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
        raise StartFailed(f"an actor of the run did not start: {first} (the actors import the code the config "
                          "names: ship it with runtime.runtime_env, or install it on every node)") from None


def worker_bundle(cfg: RunConfig) -> dict[str, float]:
    rt = cfg.runtime
    return {"CPU": rt.cpus_per_worker} | ({"GPU": rt.gpus_per_worker} if rt.gpus_per_worker else {})


def worker_placement_group(cfg: RunConfig) -> Any:
    """A placement group with one bundle per worker, spread over nodes (or packed)."""
    import ray
    from ray.util.placement_group import placement_group

    rt = cfg.runtime
    bundle = worker_bundle(cfg)
    pg = placement_group([bundle] * rt.workers, strategy="SPREAD" if rt.placement == "spread" else "PACK")
    wait_s = max(rt.step_timeout_s, rt.placement_wait_s)
    ready, _ = ray.wait([pg.ready()], timeout=wait_s)
    if not ready:
        ray.util.remove_placement_group(pg)
        raise StepFailed(f"runtime.workers={rt.workers} x {bundle} could not be placed within {wait_s:g} s "
                         f"(free: {ray.available_resources()}); other jobs hold the resources, or lower "
                         "runtime.workers or cpus_per_worker")
    return pg


def merge_states(states: list[tuple[int, Params]]) -> Params:
    """The whole model's parameters from every server shard's ``(step, part)``."""
    return {k: v for _, part in states for k, v in part.items()}


def final_params(actors: Actors, cfg: RunConfig) -> tuple[int, Params]:
    """(step, params) merged from every server shard."""
    states = server_get([s.get.remote() for s in actors.servers], cfg, "get()")
    return states[0][0], merge_states(states)


def release(actors: Actors) -> None:
    import ray

    for a in [*actors.servers, *actors.pool.actors, *actors.aggregators.values()]:
        try:
            ray.kill(a)
        except Exception as exc:  # already gone
            log.debug("kill: %s", exc)
    try:
        if actors.pool.owns_placement_group:
            ray.util.remove_placement_group(actors.pool.placement_group)
    except Exception as exc:
        log.debug("remove_placement_group: %s", exc)

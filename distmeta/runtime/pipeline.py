"""Pipelined steps: the driver submits ahead and collects behind, off the critical path.

Step t is ``compute(t)`` on every worker, then ``apply(t)`` on the server (``reduce`` and
``update`` on each of K server shards), whose second return, the state of step t+1, is the
argument of ``compute(t+1)``. The driver submits up to ``runtime.max_lag`` steps beyond the
one it collects, so Ray resolves one step's inputs from the last one's outputs without a
driver round trip in between. The driver collects each step's statuses, metrics and faults
in order:

- a worker that died or hung (``runtime.step_timeout_s``; a hung worker is killed so its
  pending results fail) has its logical shards recomputed by the live workers, or by itself
  once restarted (``on_worker_loss: wait``); the other workers' results are kept, and the
  steps submitted after it, whose inputs now fail, are dropped and submitted again;
- a server that restarted (its ``apply`` failed or was rejected as stale) restored its newest
  checkpoint: the pipeline re-syncs from the server's step (every server shard brought back
  to one complete checkpoint) and recomputes from there.

What to do about a fault is the :class:`~distmeta.runtime.faults.FaultPolicy`'s decision;
this module only submits and collects. Episodes and sums are pure functions of (seed, step,
logical shard) and the reduction tree is fixed, so the final parameters are bit-identical to
a fault-free run on any number of workers.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from distmeta.config import RunConfig
from distmeta.runtime.actors import Actors, merge_states, server_get, sync_servers
from distmeta.runtime.faults import FaultPolicy, is_server_failure
from distmeta.runtime.tree import deal
from distmeta.types import Params

log = logging.getLogger(__name__)


class CheckpointsFailing(RuntimeError):
    """A server shard's checkpoints failed through every retry: the run must not train on."""

    def __init__(self, step: int, reason: str, failures: float) -> None:
        super().__init__(reason)
        self.step, self.reason, self.failures = step, reason, failures


@dataclass
class Submitted:
    """One step in flight: who computes which shards, and the refs of what comes back."""

    step: int
    inputs: list[Any]  # per server shard: the state refs this step computes from
    status: dict[Any, tuple[int, list[int], list[Any]]] = field(default_factory=dict)
    """status ref -> (worker, its shards, its K block-list refs)"""
    kept: list[list[Any]] = field(default_factory=list)  # block-list refs of earlier attempts
    stats: list[Any] = field(default_factory=list)  # per server shard
    states: list[Any] = field(default_factory=list)  # per server shard: the state of step + 1


@dataclass
class Collected:
    step: int
    metrics: dict[str, float]  # per-task means of the metric sums, and the step's stats
    params_ref: list[Any]  # refs of the state after the step (for diagnostics)


class Pipeline:
    """Steps in flight: ``submit`` the next one, ``collect`` the oldest."""

    def __init__(self, cfg: RunConfig, actors: Actors, policy: FaultPolicy,
                 on_dispatch: Callable[[int, Pipeline], None] | None = None, target: int | None = None) -> None:
        self.cfg, self.actors, self.policy, self.on_dispatch = cfg, actors, policy, on_dispatch
        self.target = cfg.outer.steps if target is None else target
        self.pool, self.servers = actors.pool, actors.servers
        self.server = actors.servers[0]
        self.inflight: deque[Submitted] = deque()
        self.next_step, self.states = 0, []
        self.last_collect: float | None = None

    # -- submission ------------------------------------------------------------------------
    def sync(self) -> int:
        """Start (again) from the servers' step: drop everything in flight."""
        self.inflight.clear()
        self.next_step = sync_servers(self.servers, self.cfg)
        self.states = [s.get.remote() for s in self.servers]
        self.last_collect = None
        self.policy.reset()
        return self.next_step

    def reports(self, step: int) -> bool:
        """Whether step ``step`` is logged (every ``tracking.log_every``-th and the last): the
        workers compute the rule's metrics only then."""
        return step % self.cfg.tracking.log_every == 0 or step >= self.target - 1

    def full(self) -> bool:
        return len(self.inflight) > self.cfg.runtime.max_lag

    def submit(self) -> None:
        step, shards = self.next_step, list(range(self.cfg.runtime.logical_shards))
        sub = Submitted(step, self.states)
        self._compute(sub, shards, self.policy.workers(0))
        self._apply(sub, aggregate=True)
        self.inflight.append(sub)
        self.states, self.next_step = sub.states, step + 1
        if self.on_dispatch is not None:
            self.on_dispatch(step, self)

    def _compute(self, sub: Submitted, shards: list[int], workers: list[int]) -> None:
        k = len(self.servers)
        for w, mine in deal(shards, workers, self.actors.node_of).items():
            refs = self.pool.actors[w].compute.options(num_returns=1 + k).remote(
                sub.step, mine, *sub.inputs, report=self.reports(sub.step))
            sub.status[refs[0]] = (w, mine, refs[1:])

    def _apply(self, sub: Submitted, aggregate: bool) -> None:
        results = sub.kept + [refs for _, _, refs in sub.status.values()]
        inputs = (self._aggregated(sub) if aggregate else
                  [[refs[j] for refs in results] for j in range(len(self.servers))])
        if len(self.servers) == 1:
            stats, state = self.server.apply.options(num_returns=2).remote(sub.step, *inputs[0])
            sub.stats, sub.states = [stats], [state]
            return
        norms = [s.reduce.remote(sub.step, *inputs[j]) for j, s in enumerate(self.servers)]
        outs = [s.update.options(num_returns=2).remote(sub.step, *norms) for s in self.servers]
        sub.stats, sub.states = [o[0] for o in outs], [o[1] for o in outs]

    def _aggregated(self, sub: Submitted) -> list[list[Any]]:
        """Per server shard, the inputs: one per node where a node aggregator pre-sums its
        workers' blocks, else the workers' own."""
        by_node: dict[str, list[list[Any]]] = {}
        for w, _, refs in sub.status.values():
            by_node.setdefault(self.actors.node_of.get(w, str(w)), []).append(refs)
        inputs: list[list[Any]] = [[] for _ in self.servers]
        for node, group in by_node.items():
            agg = self.actors.aggregators.get(node)
            for j in range(len(self.servers)):
                if agg is not None and len(group) > 1:
                    inputs[j].append(agg.combine.remote(*[refs[j] for refs in group]))
                else:
                    inputs[j] += [refs[j] for refs in group]
        return inputs

    def params(self, done: Collected) -> Params:
        """The parameters after a collected step, merged from every server shard."""

        return merge_states(server_get(done.params_ref, self.cfg, f"the state after step {done.step}"))

    # -- collection ------------------------------------------------------------------------
    def collect(self) -> Collected | None:
        """The oldest step in flight, once applied; ``None`` when the server restarted and the
        pipeline re-synced from its step (the caller goes on from ``next_step``)."""
        sub = self.inflight.popleft()
        metrics, timing = self._statuses(sub)
        try:
            stats = server_get(sub.stats, self.cfg, f"apply(step={sub.step})")
        except Exception as exc:
            if not is_server_failure(exc):
                raise
            self.policy.resync(sub.step, exc)
            self.sync()
            return None
        self.policy.count_restarts([s.pop("incarnation") for s in stats])
        errors = [e for e in (s.pop("checkpoint_error") for s in stats) if e]
        if errors:
            raise CheckpointsFailing(sub.step, errors[0], sum(s["checkpoint_failures"] for s in stats))
        now = time.perf_counter()
        step_s = now - self.last_collect if self.last_collect is not None else timing["compute_s"]
        self.last_collect = now
        n = self.cfg.runtime.meta_batch
        out = mean_metrics(metrics, n) | stats[0] | timing | {
            "server_s": max(s["server_s"] for s in stats),
            "server_in_floats": sum(s["server_in_floats"] for s in stats),
            "checkpoint_failures": sum(s["checkpoint_failures"] for s in stats),
            "step_s": step_s, "tasks_per_s": n / step_s} | self.policy.counters.metrics()
        return Collected(sub.step, out, sub.states)

    def _statuses(self, sub: Submitted) -> tuple[dict[int, dict[str, float]], dict[str, float]]:
        """Wait for the step's workers; recompute what failed until every shard is in."""
        import ray

        metrics: dict[int, dict[str, float]] = {}
        timing = {"compute_s": 0.0, "skipped_files": 0.0}
        for attempt in self.policy.attempts():
            pending = dict(sub.status)
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=self.cfg.runtime.step_timeout_s)
            failed: list[int] = []
            for ref, (w, shards, refs) in pending.items():
                status = self.policy.status(ref, ref in ready, w, sub.step)
                if status is None:
                    failed += shards
                    continue
                sub.kept.append(refs)
                metrics.update(status["metrics"])
                timing["compute_s"] = max(timing["compute_s"], status["compute_s"])
                timing["skipped_files"] = max(timing["skipped_files"], len(status["skipped_files"]))
            if not failed:
                return metrics, timing
            self.policy.retry(sub.step, sorted(failed))
            self._resubmit(sub, sorted(failed), attempt + 1)
        raise self.policy.give_up(sub.step)

    def _resubmit(self, sub: Submitted, failed: list[int], attempt: int) -> None:
        """Recompute ``failed`` shards on the workers available, apply again with the kept
        results, and submit again every later step (their inputs failed with this one's)."""
        import ray

        later = len(self.inflight)
        self.inflight.clear()
        # The failed attempt's apply fails once its lost inputs do, and with it every later
        # step queued on the workers: wait for that, so the retry does not queue behind them.
        ray.wait(sub.stats, num_returns=len(sub.stats), timeout=self.cfg.runtime.step_timeout_s)
        sub.status = {}
        self._compute(sub, failed, self.policy.workers(attempt))
        self._apply(sub, aggregate=False)
        self.states, self.next_step = sub.states, sub.step + 1
        for _ in range(later):
            self.submit()


def mean_metrics(per_shard: dict[int, dict[str, float]], n_tasks: int) -> dict[str, float]:
    """Per-task means of the shards' metric sums, added in shard order."""
    out: dict[str, float] = {}
    for shard in sorted(per_shard):
        for k, v in per_shard[shard].items():
            out[k] = out.get(k, 0.0) + v
    return {k: v / n_tasks for k, v in out.items()}

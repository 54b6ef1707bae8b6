"""``train``: start or resume a run, drive the step loop, checkpoint, evaluate, track."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from distmeta.config import RunConfig, apply_overrides, validate
from distmeta.runtime.cluster import connect
from distmeta.runtime.driver import (
    Counters,
    StepRunner,
    apply_step,
    final_params,
    make_actors,
    release,
)
from distmeta.runtime.report import Reporter
from distmeta.runtime.server import StaleStepError
from distmeta.runtime.storage import RunDir
from distmeta.types import Params

log = logging.getLogger(__name__)
CONFIG_FILE = "config.yaml"


@dataclass
class Callbacks:
    """Hooks: ``on_start(run_dir, cfg, first_step)``, ``on_dispatch(step, runner)`` (after a
    step's work is sent, before it is collected; ``runner.pool``/``runner.server`` are the
    actors), ``on_step(step, metrics)``."""

    on_start: Callable[[str, RunConfig, int], None] | None = None
    on_dispatch: Callable[[int, Any], None] | None = None
    on_step: Callable[[int, dict[str, float]], None] | None = None


@dataclass
class TrainResult:
    run_dir: str
    config: RunConfig
    step: int
    params: Params
    counters: Counters
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    wall_s: float = 0.0
    first_step_s: float | None = None
    tasks_per_s: float = 0.0
    evaluation: Any | None = None
    run_id: str | None = None
    tracking_uri: str | None = None
    stopped_by_time_limit: bool = False


def open_run(cfg: RunConfig | None, run_dir: str | None, resume: str | None,
             overrides: list[str] | None = None) -> tuple[RunConfig, RunDir]:
    """A new run directory holding the resolved config, or the one being resumed."""
    if resume:
        rd = RunDir(resume)
        if not rd.exists(CONFIG_FILE):
            raise FileNotFoundError(f"--resume {resume}: no {CONFIG_FILE} there; is it a distmeta run directory?")
        data = yaml.safe_load(rd.read_text(CONFIG_FILE))
        cfg = validate(apply_overrides(data, overrides or []))
        return cfg, rd
    if cfg is None:
        raise ValueError("train: give a config, or resume= a run directory")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    rd = RunDir(run_dir or cfg.run_dir or f"runs/{cfg.name}-{stamp}")
    if rd.exists(CONFIG_FILE):
        raise FileExistsError(f"run_dir {rd.location} already holds a run; use --resume {rd.location}")
    cfg = validate({**cfg.to_dict(), "run_dir": rd.location})
    rd.makedirs()
    rd.write_text(CONFIG_FILE, cfg.to_yaml())
    return cfg, rd


def mean_metrics(per_shard: dict[int, dict[str, float]], n_tasks: int) -> dict[str, float]:
    """Per-task means of the shards' metric sums, added in shard order."""
    out: dict[str, float] = {}
    for shard in sorted(per_shard):
        for k, v in per_shard[shard].items():
            out[k] = out.get(k, 0.0) + v
    return {k: v / n_tasks for k, v in out.items()}


def check_data(cfg: RunConfig) -> None:
    """Fail before any actor starts when the episodes cannot be had: a missing or mismatched
    dataset (``data.path``), or no Omniglot arrays where the config looks for them."""
    from pathlib import Path

    from distmeta.runtime.sources import OMNIGLOT_ENV, omniglot_root, task_source

    if cfg.data.path:
        task_source(cfg)
    elif cfg.task.family == "omniglot" and not Path(omniglot_root(cfg.task.kwargs)).is_dir():
        raise FileNotFoundError(
            f"Omniglot not found at {omniglot_root(cfg.task.kwargs)}: set task.root or ${OMNIGLOT_ENV}, "
            "or pack shards with `distmeta data pack omniglot --root DIR --out DATA` and set data.path")


def representation_diagnostics(cfg: RunConfig) -> Callable[[Params], dict[str, float]] | None:
    """For the linear-representation family: the principal-angle distance of B to B*."""
    if cfg.task.family != "linear_rep" or cfg.model.name != "linear_rep":
        return None
    from distmeta.models import representation
    from distmeta.runtime.sources import task_source
    from distmeta.tasks import principal_angle_distance

    b_star = getattr(task_source(cfg), "b_star", None)
    if b_star is None:
        return None
    model = cfg.model.build()
    return lambda params: {"principal_angle_distance": principal_angle_distance(representation(model, params), b_star)}


def train(cfg: RunConfig | None = None, *, run_dir: str | None = None, resume: str | None = None,
          overrides: list[str] | None = None, address: str | None = None, until_step: int | None = None,
          callbacks: Callbacks | None = None, evaluate_at_end: bool = True) -> TrainResult:
    """Run (or resume) meta-training to ``outer.steps`` (or stop after ``until_step``), then
    evaluate on held-out tasks; everything is recorded by the tracker."""
    start = time.perf_counter()
    cfg, rd = open_run(cfg, run_dir, resume, overrides)
    check_data(cfg)
    cb = callbacks or Callbacks()
    rt = cfg.runtime
    session = connect(address, num_cpus=rt.workers * rt.cpus_per_worker,
                      num_gpus=rt.workers * rt.gpus_per_worker or None)
    reporter = Reporter(cfg, rd)
    server, pool = make_actors(cfg, rd.location)
    result: TrainResult | None = None
    status = "FAILED"
    try:
        import ray

        reporter.start(nodes=len([n for n in ray.nodes() if n.get("Alive")]))
        result = _loop(cfg, rd, server, pool, Counters(), cb, until_step, reporter, start)
        result.run_id, result.tracking_uri = reporter.run_id, reporter.tracking_uri
        if evaluate_at_end and (result.step >= cfg.outer.steps or result.stopped_by_time_limit):
            from distmeta.evaluation import evaluate

            result.evaluation = evaluate(cfg, result.params)
        status = "FINISHED"
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        release(server, pool)
        done = result if status == "FINISHED" else None
        reporter.finish(done.step if done else None, done.evaluation if done else None, status)
        session.shutdown()


def _loop(cfg: RunConfig, rd: RunDir, server: Any, pool: Any, counters: Counters, cb: Callbacks,
          until_step: int | None, reporter: Reporter, start: float) -> TrainResult:
    """The step loop; ``start`` is when ``train`` was called (wall time and time to first step)."""
    import ray

    diagnostics = representation_diagnostics(cfg)
    runner = StepRunner(cfg, server, pool, counters, cb.on_dispatch)
    step = ray.get(server.get_step.remote())
    target = min(cfg.outer.steps, until_step) if until_step is not None else cfg.outer.steps
    if cb.on_start:
        cb.on_start(rd.location, cfg, step)
    result = TrainResult(rd.location, cfg, step, {}, counters)
    tasks, loop_start, limit = 0, time.perf_counter(), cfg.runtime.time_limit_s
    while step < target:
        t0 = time.perf_counter()
        try:
            grads_refs, per_shard, timing = runner.compute(step, server.get.remote())
        except StaleStepError:
            stats = None
        else:
            stats = apply_step(server, step, grads_refs, counters)
        if stats is None:  # the server restarted from a checkpoint: continue from its step
            step = ray.get(server.get_step.remote())
            continue
        step_s = time.perf_counter() - t0
        tasks += cfg.runtime.meta_batch
        result.first_step_s = result.first_step_s or time.perf_counter() - start
        metrics = mean_metrics(per_shard, cfg.runtime.meta_batch) | stats | timing | {
            "step_s": step_s, "tasks_per_s": cfg.runtime.meta_batch / step_s,
            "retries": float(counters.retries), "worker_failures": float(counters.worker_failures),
            "server_restarts": float(counters.server_restarts)}
        last = step + 1 >= target
        if diagnostics is not None and (step % cfg.tracking.log_every == 0 or last):
            metrics |= diagnostics(ray.get(server.get.remote())[1])
        result.history.append((step, metrics))
        reporter.step(step, metrics, last)
        step += 1
        if cb.on_step:
            cb.on_step(step, metrics)
        if limit is not None and step < target and time.perf_counter() - loop_start >= limit:
            log.info("runtime.time_limit_s=%g reached after %d of %d steps", limit, step, cfg.outer.steps)
            result.stopped_by_time_limit = True
            break
    ray.get(server.checkpoint.remote())
    result.step, result.params = final_params(server)
    result.wall_s = time.perf_counter() - start
    result.tasks_per_s = tasks / max(sum(m["step_s"] for _, m in result.history), 1e-9)
    return result

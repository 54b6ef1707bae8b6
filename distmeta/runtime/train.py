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


def train(cfg: RunConfig | None = None, *, run_dir: str | None = None, resume: str | None = None,
          overrides: list[str] | None = None, address: str | None = None, until_step: int | None = None,
          callbacks: Callbacks | None = None) -> TrainResult:
    """Run (or resume) meta-training to ``outer.steps`` (or stop after ``until_step``)."""
    cfg, rd = open_run(cfg, run_dir, resume, overrides)
    cb = callbacks or Callbacks()
    rt = cfg.runtime
    session = connect(address, num_cpus=rt.workers * rt.cpus_per_worker,
                      num_gpus=rt.workers * rt.gpus_per_worker or None)
    server, pool = make_actors(cfg, rd.location)
    counters = Counters()
    try:
        return _loop(cfg, rd, server, pool, counters, cb, until_step)
    finally:
        release(server, pool)
        session.shutdown()


def _loop(cfg: RunConfig, rd: RunDir, server: Any, pool: Any, counters: Counters, cb: Callbacks,
          until_step: int | None) -> TrainResult:
    import ray

    start = time.perf_counter()
    runner = StepRunner(cfg, server, pool, counters, cb.on_dispatch)
    step = ray.get(server.get_step.remote())
    target = min(cfg.outer.steps, until_step) if until_step is not None else cfg.outer.steps
    if cb.on_start:
        cb.on_start(rd.location, cfg, step)
    result = TrainResult(rd.location, cfg, step, {}, counters)
    tasks = 0
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
        result.history.append((step, metrics))
        step += 1
        if cb.on_step:
            cb.on_step(step, metrics)
    ray.get(server.checkpoint.remote())
    result.step, result.params = final_params(server)
    result.wall_s = time.perf_counter() - start
    result.tasks_per_s = tasks / max(sum(m["step_s"] for _, m in result.history), 1e-9)
    return result

"""``train``: start or resume a run, drive the step loop, checkpoint, evaluate, track."""

from __future__ import annotations

import functools
import inspect
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from distmeta.config import RunConfig
from distmeta.errors import ConfigError
from distmeta.models import MODELS
from distmeta.runtime.cluster import connect
from distmeta.runtime.driver import Counters, final_params, make_actors, release, server_get
from distmeta.runtime.pipeline import Pipeline
from distmeta.runtime.report import Reporter
from distmeta.runtime.resume import open_run
from distmeta.runtime.stop import StepAbandoned, StopRequest
from distmeta.runtime.storage import RunDir
from distmeta.types import Params

log = logging.getLogger(__name__)


@dataclass
class Callbacks:
    """Hooks: ``on_start(run_dir, cfg, first_step)``, ``on_dispatch(step, runner)`` (after a
    step's work is sent, before it is collected; ``runner.pool``/``runner.server`` are the
    actors), ``on_step(step, metrics)``, ``on_validate(step, params)`` every ``validate_every``
    steps and at the last (a sweep's validation)."""

    on_start: Callable[[str, RunConfig, int], None] | None = None
    on_dispatch: Callable[[int, Any], None] | None = None
    on_step: Callable[[int, dict[str, float]], None] | None = None
    on_validate: Callable[[int, Params], None] | None = None
    validate_every: int = 0


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
    stopped_by_signal: int | None = None
    model_uri: str | None = None

    @property
    def exit_code(self) -> int:
        """0 when the run ended as asked; 128 + the signal's number when a signal stopped it."""
        return 128 + self.stopped_by_signal if self.stopped_by_signal else 0


def check_data(cfg: RunConfig) -> None:
    """Fail before any actor starts when the episodes cannot be had (a missing or mismatched
    dataset at ``data.path``, no Omniglot arrays where the config looks for them, images the
    model does not take) or ``model.init`` does not fit the model."""
    from pathlib import Path

    from distmeta.runtime.sources import OMNIGLOT_ENV, omniglot_root, task_source

    if cfg.model.init:
        from distmeta.runtime.server import initial_params

        initial_params(cfg)  # a checkpoint that does not fit is a ConfigError before any actor starts
    if cfg.data.path:
        source = task_source(cfg)
        check_input_shape(cfg, getattr(getattr(source, "pool", None), "image_shape", None))
        if getattr(source, "labels", None) == "global":
            n_way = cfg.model.kwargs.get("n_way", 0)
            if n_way < source.n_classes:
                raise ConfigError(f"model.n_way={n_way}: task.labels=global needs one output per class of "
                                  f"the split, {source.n_classes}")
    elif cfg.task.family == "omniglot" and not Path(omniglot_root(cfg.task.kwargs)).is_dir():
        raise FileNotFoundError(
            f"Omniglot not found at {omniglot_root(cfg.task.kwargs)}: set task.root or ${OMNIGLOT_ENV}, "
            "or pack shards with `distmeta data pack omniglot --root DIR --out DATA` and set data.path")


def check_input_shape(cfg: RunConfig, image_shape: tuple[int, ...] | None) -> None:
    """A ConfigError naming ``model.in_channels`` / ``model.image_size`` when the packed images
    (``[C, H, W]``) are not what the model takes."""
    kw = cfg.model.kwargs
    if image_shape is None or "image_size" not in inspect.signature(MODELS[cfg.model.name]).parameters:
        return
    channels, size = image_shape[0], image_shape[-1]
    wanted = {"model.in_channels": (kw.get("in_channels", 1), channels),
              "model.image_size": (kw.get("image_size", 28), size)}
    bad = [f"{k}={have} but the images at data.path have {want}" for k, (have, want) in wanted.items() if have != want]
    if bad:
        raise ConfigError("; ".join(bad) + f" (images are {list(image_shape)})")


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
    evaluate on held-out tasks; everything is recorded by the tracker. ``resume`` is a run
    directory or ``"auto"`` (see :mod:`distmeta.runtime.resume`). SIGTERM/SIGINT stop the run
    cleanly (:mod:`distmeta.runtime.stop`): ``result.stopped_by_signal`` says so."""
    start = time.perf_counter()
    cfg, rd = open_run(cfg, run_dir, resume, overrides)
    check_data(cfg)
    cb = callbacks or Callbacks()
    rt = cfg.runtime
    session = connect(address, num_cpus=rt.workers * rt.cpus_per_worker)  # GPUs: what Ray detects
    result: TrainResult | None = None
    status = "FAILED"
    with StopRequest(rt.stop_grace_s) as stop:
        reporter = Reporter(cfg, rd, representation_diagnostics(cfg))
        actors = make_actors(cfg, rd.location)
        try:
            import ray

            reporter.start(nodes=len([n for n in ray.nodes() if n.get("Alive")]))
            result = _loop(cfg, rd, actors, Counters(), cb, until_step, reporter, start, stop)
            result.run_id, result.tracking_uri = reporter.run_id, reporter.tracking_uri
            if stop.requested:
                status = "KILLED"
                return result
            if evaluate_at_end and (result.step >= cfg.outer.steps or result.stopped_by_time_limit):
                from distmeta.evaluation import evaluate

                result.evaluation = evaluate(cfg, result.params)
            status = "FINISHED"
            return result
        except (KeyboardInterrupt, StepAbandoned):
            status = "KILLED"
            raise
        finally:
            release(actors)
            done = result if status in ("FINISHED", "KILLED") else None
            reporter.finish(done.step if done else None, done.evaluation if done else None, status)
            if result is not None:
                result.model_uri = reporter.model_uri
            session.shutdown()


def _loop(cfg: RunConfig, rd: RunDir, actors: Any, counters: Counters, cb: Callbacks,
          until_step: int | None, reporter: Reporter, start: float, stop: StopRequest) -> TrainResult:
    """Submit ahead (up to ``runtime.max_lag`` steps), collect in order, hand each step to the
    reporter. A stop request or the time limit ends submission; the steps in flight are still
    collected (an abandoned one ends the loop at once). Either way the loop ends with a
    checkpoint at the server's step. ``start`` is when ``train`` was called."""
    pipe = Pipeline(cfg, actors, counters, cb.on_dispatch)
    step = pipe.sync()
    target = min(cfg.outer.steps, until_step) if until_step is not None else cfg.outer.steps
    if cb.on_start:
        cb.on_start(rd.location, cfg, step)
    result = TrainResult(rd.location, cfg, step, {}, counters, history=reporter.history)
    reporter.loop_start = time.perf_counter()
    try:
        while True:
            ending = stop.requested or result.stopped_by_time_limit
            while not ending and not pipe.full() and pipe.next_step < target:
                pipe.submit()
            if not pipe.inflight:
                break
            done = pipe.collect()
            if done is None:  # the server restarted: the pipeline goes on from its step
                continue
            result.first_step_s = result.first_step_s or time.perf_counter() - start
            metrics = reporter.record(done.step, done.metrics, functools.partial(pipe.params, done),
                                      last=done.step + 1 >= target or ending)
            if cb.on_step:
                cb.on_step(done.step + 1, metrics)
            if cb.on_validate and cb.validate_every and ((done.step + 1) % cb.validate_every == 0
                                                         or done.step + 1 >= target):
                cb.on_validate(done.step + 1, pipe.params(done))
            if not result.stopped_by_time_limit and done.step + 1 < target and reporter.time_up():
                log.info("runtime.time_limit_s=%g reached after %d of %d steps", cfg.runtime.time_limit_s,
                         done.step + 1, cfg.outer.steps)
                result.stopped_by_time_limit = True
    except StepAbandoned as exc:
        log.warning("step %d abandoned (%s)", pipe.next_step, exc)
    stop.disarm()
    if stop.requested:
        result.stopped_by_signal = stop.signum
    uri = server_get([s.checkpoint.remote() for s in actors.servers], cfg, "checkpoint()")[0]
    result.step, result.params = final_params(actors, cfg)
    if stop.requested:
        log.warning("stopped by %s at step %d of %d; checkpoint %s; continue with --resume",
                    signal.Signals(stop.signum).name, result.step, cfg.outer.steps, uri)
    result.wall_s, result.tasks_per_s = time.perf_counter() - start, reporter.tasks_per_s()
    return result

"""One training run: :class:`Run` owns it from the first check to the last artifact.

Like torchtitan's ``Trainer``, a run holds its parts and says in a few lines what they do:
its run directory (named file by file in :mod:`distmeta.rundir.layout`), its tracking
(:class:`~distmeta.tracking.run.RunTracking`), the loop state (step, history, first-step time),
the stop policy (signals, the time limit, the last step: :class:`~distmeta.runtime.stop.StopPolicy`)
and, on the cluster, the actors and the fault policy their loop consults
(:class:`~distmeta.runtime.faults.FaultPolicy`). The loop is Ray's parameter-server example,
pipelined: ``compute(t)`` on every worker against the server's state, ``apply(t)`` on the
server, then the same for ``t + 1`` against the state ``apply(t)`` returns
(:mod:`distmeta.runtime.pipeline`). ``distmeta train``, every sweep trial and ``distmeta eval``
go through a :class:`Run`.
"""

from __future__ import annotations

import functools
import logging
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from distmeta import plugins
from distmeta.config import RunConfig, validate
from distmeta.errors import NotFound
from distmeta.evaluation import EvalReport, diagnostics, evaluate
from distmeta.rundir import layout
from distmeta.rundir.checkpoint import load_checkpoint
from distmeta.rundir.lease import Lease
from distmeta.rundir.metrics import History
from distmeta.rundir.resume import open_run, read_run_config
from distmeta.rundir.storage import RunDir
from distmeta.runtime import preflight
from distmeta.runtime.actors import (
    Actors,
    final_params,
    make_actors,
    release,
    runtime_env,
    server_get,
)
from distmeta.runtime.cluster import connect, job_tags, live_nodes
from distmeta.runtime.fallback import (
    StorageFailed,
    failure_tags,
    is_storage_failure,
    write_fallback,
)
from distmeta.runtime.faults import Counters, FaultPolicy
from distmeta.runtime.pipeline import CheckpointsFailing, Collected, Pipeline
from distmeta.runtime.stop import StepAbandoned, StopPolicy, exit_code
from distmeta.tracking.run import RunTracking
from distmeta.types import Params

log = logging.getLogger(__name__)


@dataclass
class Callbacks:
    """Hooks: ``on_start(run_dir, cfg, first_step)``, ``on_dispatch(step, pipeline)`` (after a
    step's work is sent, before it is collected; ``pipeline.pool``/``pipeline.servers`` are the
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
    evaluation: EvalReport | None = None
    run_id: str | None = None
    tracking_uri: str | None = None
    stopped_by_time_limit: bool = False
    stopped_by_signal: int | None = None
    model_uri: str | None = None

    @property
    def exit_code(self) -> int:
        """0 when the run ended as asked; 128 + the signal's number when a signal stopped it."""
        return exit_code(self.stopped_by_signal)


def _background(fn: Callable[..., Any], **kwargs: Any) -> Future[Any]:
    """``fn(**kwargs)`` on a thread of its own; ``.result()`` waits and re-raises."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="distmeta-start")
    future = pool.submit(fn, **kwargs)
    pool.shutdown(wait=False)
    return future


class Run:
    """A run directory and everything that trains, stops, records and evaluates it."""

    def __init__(self, cfg: RunConfig, rd: RunDir) -> None:
        self.cfg, self.rd = cfg, rd
        self.history = History(rd)
        self.diagnostics = diagnostics(cfg)

    @classmethod
    def open(cls, cfg: RunConfig | None = None, *, run_dir: str | None = None, resume: str | None = None,
             overrides: list[str] | None = None) -> Run:
        """A new run, a continued one (``resume=RUN_DIR``) or an auto-resumed one
        (``resume="auto"``): see :mod:`distmeta.rundir.resume`."""
        run = cls(*open_run(cfg, run_dir, resume, overrides))
        roots = plugins.import_roots(run.cfg.import_paths() + plugins.given_paths())
        if roots:
            layout.write_code(run.rd, roots)
        return run

    @classmethod
    def at(cls, location: str) -> Run:
        """The run already in ``location`` (to evaluate it); the user's code is imported from
        where the run imported it."""
        rd = RunDir(location)
        plugins.search_paths(*layout.read_code(rd))
        return cls(validate(read_run_config(rd)), rd)

    @functools.cached_property
    def tracking(self) -> RunTracking:
        return RunTracking(self.cfg, self.rd)

    # -- training --------------------------------------------------------------------------
    def check(self) -> None:
        """What must hold before any actor starts (:mod:`distmeta.runtime.preflight`)."""
        preflight.check(self.cfg)

    def train(self, *, address: str | None = None, until_step: int | None = None,
              callbacks: Callbacks | None = None, evaluate_at_end: bool = True) -> TrainResult:
        """Meta-train to ``outer.steps`` (or stop after ``until_step``), then evaluate on held-out
        tasks; SIGTERM/SIGINT stop cleanly with a checkpoint (``result.stopped_by_signal``)."""
        start = time.perf_counter()
        lease = Lease(self.rd, self.cfg.runtime.lease_timeout_s).acquire()
        try:
            return self._train(start, address, until_step, callbacks, evaluate_at_end)
        finally:
            lease.release()

    def _train(self, start: float, address: str | None, until_step: int | None, callbacks: Callbacks | None,
               evaluate_at_end: bool) -> TrainResult:
        self.check()
        rt = self.cfg.runtime
        target = min(self.cfg.outer.steps, until_step) if until_step is not None else self.cfg.outer.steps
        building = _background(lambda: self.tracking)  # MLflow imports while Ray starts
        session = connect(address, rt.workers * rt.cpus_per_worker, runtime_env(self.cfg),  # GPUs: what Ray detects
                          dashboard=rt.dashboard)
        result: TrainResult | None = None
        status = "FAILED"
        with StopPolicy(target, rt.time_limit_s, rt.stop_grace_s) as stop:
            tracking = building.result()
            # the MLflow run opens while the actors start (both wait on other processes)
            opening = _background(tracking.open_training, nodes=live_nodes(), workers=rt.workers, extra=job_tags())
            actors: Actors | None = None
            try:
                actors = make_actors(self.cfg, self.rd.location)
                opening.result()
                result = self._loop(actors, stop, callbacks or Callbacks(), start)
                result.run_id, result.tracking_uri = tracking.run_id, tracking.tracking_uri
                status = self._evaluate(result, stop, evaluate_at_end, actors)
                return result
            except StorageFailed as exc:
                tracking.fail(failure_tags(exc))
                raise
            except KeyboardInterrupt:
                status = "KILLED"
                raise
            finally:
                if actors is not None:
                    release(actors)
                wait([opening])  # when the actors failed to start: the run, if it opened, ends FAILED
                self.history.close()
                done = result if status in ("FINISHED", "KILLED") else None
                tracking.finish(done.step if done else None, self.history.curve_points(),
                                done.evaluation if done else None, status)
                if result is not None:
                    result.model_uri = tracking.model_uri
                session.shutdown()

    def _final_evaluation(self, actors: Actors, params: Params) -> EvalReport:
        """On a live worker's GPU when the workers have GPUs (polled, so a signal stops it
        within a second), else here, where all of the driver's cores are free by now."""
        live = actors.pool.live()
        if self.cfg.runtime.gpus_per_worker <= 0 or not live:
            return evaluate(self.cfg, params)
        import ray

        ref = actors.pool.actors[live[0]].evaluate.remote(params)
        while True:
            ready, _ = ray.wait([ref], timeout=1.0)
            if ready:
                return ray.get(ref)

    def _evaluate(self, result: TrainResult, stop: StopPolicy, evaluate_at_end: bool, actors: Actors) -> str:
        """The final evaluation, after the checkpoint; a signal during it stops it (the run is
        KILLED, its exit 128 + the signal). The run's status."""
        if result.stopped_by_signal:
            return "KILLED"
        if evaluate_at_end and (result.step >= self.cfg.outer.steps or result.stopped_by_time_limit):
            stop.signals.evaluating()
            log.info("meta-testing the parameters of step %d on %d held-out episodes (%s)", result.step,
                     self.cfg.eval.episodes, self.cfg.eval.split)
            try:
                result.evaluation = self._final_evaluation(actors, result.params)
            except StepAbandoned as exc:
                log.warning("evaluation stopped: %s", exc)
                result.stopped_by_signal = stop.signals.signum
                return "KILLED"
        return "FINISHED"

    def _loop(self, actors: Actors, stop: StopPolicy, cb: Callbacks, start: float) -> TrainResult:
        """Submit ahead (up to ``runtime.max_lag`` steps), collect in order, record each step.
        A stop or the time limit ends submission; the steps in flight are still collected (an
        abandoned one ends the loop at once). The loop ends with a checkpoint at the server's
        step. ``start`` is when :meth:`train` was called."""
        policy = FaultPolicy(self.cfg.runtime, actors.pool)
        pipe = Pipeline(self.cfg, actors, policy, cb.on_dispatch, stop.target)
        step = pipe.sync()
        if cb.on_start:
            cb.on_start(self.rd.location, self.cfg, step)
        result = TrainResult(self.rd.location, self.cfg, step, {}, policy.counters)
        stop.start_loop()
        try:
            while True:
                while stop.may_submit(pipe.next_step) and not pipe.full():
                    pipe.submit()
                if not pipe.inflight:
                    break
                try:
                    done = pipe.collect()
                except CheckpointsFailing as exc:
                    self.tracking.log_step(exc.step, {"checkpoint_failures": exc.failures})
                    raise write_fallback(self.cfg, self.rd, actors, self._tracked(), exc.reason) from None
                if done is None:  # the server restarted: the pipeline goes on from its step
                    continue
                result.first_step_s = result.first_step_s or time.perf_counter() - start
                self._record(done, pipe, stop, cb)
        except StepAbandoned as exc:
            log.warning("step %d abandoned (%s)", pipe.next_step, exc)
        stop.signals.disarm()
        return self._end_loop(result, actors, stop, start)

    def _record(self, done: Collected, pipe: Pipeline, stop: StopPolicy, cb: Callbacks) -> None:
        """One collected step: diagnostics when due, the history, the tracker, the callbacks."""
        count = done.step + 1
        logged = pipe.reports(done.step) or stop.is_last(count)
        metrics = done.metrics
        if self.diagnostics is not None and logged:
            metrics = metrics | self.diagnostics(pipe.params(done))
        self.history.add(done.step, metrics, logged)
        self.tracking.log_step(done.step, metrics, logged)
        if cb.on_step:
            cb.on_step(count, metrics)
        if cb.on_validate and cb.validate_every and (count % cb.validate_every == 0 or count >= stop.target):
            cb.on_validate(count, pipe.params(done))
        stop.check_time(count, self.cfg.outer.steps)

    def _tracked(self) -> tuple[str | None, str | None]:
        return self.tracking.run_id, self.tracking.tracking_uri

    def _end_loop(self, result: TrainResult, actors: Actors, stop: StopPolicy, start: float) -> TrainResult:
        try:
            uri = server_get([s.checkpoint.remote() for s in actors.servers], self.cfg, "checkpoint()")[0]
        except Exception as exc:
            if not is_storage_failure(exc):
                raise
            reason = str(getattr(exc, "cause", None) or exc).strip().splitlines()[-1]
            raise write_fallback(self.cfg, self.rd, actors, self._tracked(), reason) from None
        result.step, result.params = final_params(actors, self.cfg)
        result.stopped_by_time_limit = stop.timed_out
        if stop.signals.requested:
            result.stopped_by_signal = stop.signals.signum
            log.warning("stopped by %s at step %d of %d; checkpoint %s; continue with --resume",
                        signal.Signals(stop.signals.signum).name, result.step, self.cfg.outer.steps, uri)
        result.wall_s, result.tasks_per_s = time.perf_counter() - start, self.tasks_per_s()
        result.history = self.history.curve_points()
        return result

    def tasks_per_s(self) -> float:
        """Tasks over the summed step times of the steps this session collected."""
        return self.history.tasks_per_s(self.cfg.runtime.meta_batch)

    # -- evaluation ------------------------------------------------------------------------
    def evaluate(self, step: int | None = None, *, split: str | None = None, steps: int | None = None,
                 episodes: int | None = None, track: bool = True) -> EvalReport:
        """Meta-test the checkpoint of ``step`` (default: the newest) and log the result to a
        run nested under the directory's tracked run."""
        state = load_checkpoint(self.rd, step)
        if state is None:
            raise NotFound(f"{self.rd.location}: no checkpoint to evaluate")
        report = evaluate(self.cfg, state["params"], split, episodes, steps)
        if track and self.cfg.tracking.enabled and layout.read_tracking(self.rd):
            self.tracking.open_child(f"eval-{report.split}-step{state['step']}", {
                "split": report.split, "episodes": report.episodes, "inner_steps": len(report.steps) - 1,
                "checkpoint_step": state["step"]})
            self.tracking.log_evaluation(report, int(state["step"]))
            self.tracking.end("FINISHED")
        return report


def train(cfg: RunConfig | None = None, *, run_dir: str | None = None, resume: str | None = None,
          overrides: list[str] | None = None, **options: Any) -> TrainResult:
    """``Run.open(cfg, run_dir=..., resume=..., overrides=...).train(**options)``: start (or
    continue) a run and meta-train it; ``options`` are :meth:`Run.train`'s."""
    return Run.open(cfg, run_dir=run_dir, resume=resume, overrides=overrides).train(**options)


def evaluate_target(target: str, **options: Any) -> EvalReport:
    """``distmeta eval RUN_DIR|CHECKPOINT``: a run directory's newest checkpoint, or the
    checkpoint file given; ``options`` are :meth:`Run.evaluate`'s."""
    location = layout.checkpoint_run_dir(target)
    rd = RunDir(location)
    if not rd.exists(layout.CONFIG):
        raise NotFound(f"{location}: no {layout.CONFIG}; expected a distmeta run directory or one of "
                                "its checkpoints")
    return Run.at(location).evaluate(layout.checkpoint_step(target) if location != target else None, **options)

"""``distmeta sweep``: a grid (or random repeats) of training jobs on Ray Tune.

Each trial is a distmeta training run of the config with the trial's values, in its own run
dir (``SWEEP_DIR/trials/<trial id>``). Its parameter server and workers run inside the trial's
placement group: a ``PlacementGroupFactory`` with bundle 0 for the trial itself and the
server, then one bundle per worker, so trials never reserve more than they use. Every
``--eval-every`` steps the trial adapts to the validation tasks and reports the
post-adaptation query loss and accuracy; ASHA (Li et al. 2020) stops the trials that fall
behind. One parent MLflow run holds the sweep, with a nested run per trial; at the end the
sweep prints a table of the trials and writes the best config as YAML. A failed or stopped
trial is reported, never fatal to the sweep; running the same command again continues an
interrupted sweep from where Tune left it.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from distmeta.config import RunConfig, apply_overrides, flat_keys, parse_yaml, validate
from distmeta.errors import ConfigError
from distmeta.evaluation import evaluate
from distmeta.rundir import layout
from distmeta.rundir.storage import RunDir, is_uri
from distmeta.runtime.actors import runtime_env, worker_bundle
from distmeta.runtime.cluster import connect
from distmeta.runtime.run import Callbacks, Run
from distmeta.tracking.mlflow_tracker import resolve_tracking_uri
from distmeta.tracking.run import RunTracking

log = logging.getLogger(__name__)
METRICS = {"val_query_loss": "min", "val_query_acc": "max"}


def parse_grid(items: list[str], base: dict[str, Any]) -> dict[str, list[Any]]:
    """``["algorithm.inner_lr=0.01,0.1", ...]`` -> ``{"algorithm.inner_lr": [0.01, 0.1]}``;
    every value is checked against the config, and an error names the key and value."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or not raw:
            raise ConfigError(f"--grid {item!r}: expected key=value1,value2,...")
        values = [parse_yaml(v) for v in raw.split(",")]
        for value in values:
            validate(apply_overrides(base, [f"{key}={json.dumps(value)}"]))
        grid[key] = values
    if not grid:
        raise ConfigError("sweep: give at least one --grid key=value1,value2")
    return grid


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep runs: what ASHA and the best config go by (``metric``), how often and on
    how many validation episodes a trial reports, how many repeats of the grid, how many
    trials at once."""

    metric: str = "val_query_loss"
    eval_every: int = 50
    eval_episodes: int = 100
    samples: int = 1
    max_concurrent: int = 1

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"--metric {self.metric}: expected one of {sorted(METRICS)}")

    @property
    def mode(self) -> str:
        return METRICS[self.metric]


@dataclass
class Sweep:
    """What every trial needs, passed to Tune as plain data."""

    base: dict[str, Any]
    grid: dict[str, list[Any]]
    directory: str
    options: SweepOptions = field(default_factory=SweepOptions)
    parent_run_id: str | None = None

    @property
    def metric(self) -> str:
        return self.options.metric

    @property
    def mode(self) -> str:
        return self.options.mode

    def trial_config(self, values: dict[str, Any], trial_dir: str) -> RunConfig:
        overrides = [f"{k}={json.dumps(v)}" for k, v in values.items()]
        cfg = validate(apply_overrides(self.base, overrides))
        return validate({**cfg.to_dict(), "run_dir": trial_dir,
                         "tracking": {**cfg.tracking.model_dump(), "parent_run_id": self.parent_run_id}})


def run_trial(values: dict[str, Any], sweep: Sweep) -> None:
    """One trial, inside a Tune worker: a :class:`Run` in the trial's run dir (continued when
    the sweep is), reporting validation every ``eval_every`` steps."""
    from ray import tune

    trial_dir = f"{sweep.directory}/{layout.trial(tune.get_context().get_trial_id())}"
    cfg = sweep.trial_config(values, trial_dir)

    def on_validate(step: int, params: Any) -> None:
        report = evaluate(cfg, params, split="val", episodes=sweep.options.eval_episodes)
        metrics = {"step": step, "val_query_loss": report.post}
        if report.acc is not None:
            metrics["val_query_acc"] = report.acc[-1]
        tune.report(metrics)

    Run.open(cfg, run_dir=trial_dir, resume="auto").train(
        evaluate_at_end=False, callbacks=Callbacks(on_validate=on_validate, validate_every=sweep.options.eval_every))


def param_space(grid: dict[str, list[Any]]) -> dict[str, Any]:
    from ray import tune

    return {key: tune.grid_search(values) for key, values in grid.items()}


def trial_resources(cfg: RunConfig) -> Any:
    """Bundle 0: the trial's own process and the parameter server; then one per worker."""
    from ray import tune

    return tune.PlacementGroupFactory([{"CPU": 0.01}] + [worker_bundle(cfg)] * cfg.runtime.workers,
                                      strategy="SPREAD" if cfg.runtime.placement == "spread" else "PACK")


def summary(results: Any, sweep: Sweep) -> list[dict[str, Any]]:
    """One row per trial: its values, status, steps reported and last metrics."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        steps = result.config.get("outer.steps", sweep.base["outer"]["steps"])
        status = "FAILED" if result.error else "STOPPED" if (metrics.get("step") or 0) < steps else "FINISHED"
        rows.append({"trial": metrics.get("trial_id") or Path(result.path).name, "status": status,
                     **{k: result.config.get(k) for k in sweep.grid}, "step": metrics.get("step"),
                     "val_query_loss": metrics.get("val_query_loss"), "val_query_acc": metrics.get("val_query_acc"),
                     "error": str(result.error).splitlines()[0][:200] if result.error else None})
    return rows


def best_config(rows: list[dict[str, Any]], sweep: Sweep) -> dict[str, Any] | None:
    """The base config with the values of the best trial (by its last reported metric)."""
    scored = [r for r in rows if r.get(sweep.metric) is not None]
    if not scored:
        return None
    best = (min if sweep.mode == "min" else max)(scored, key=lambda r: r[sweep.metric])
    cfg = validate(apply_overrides(sweep.base, [f"{k}={json.dumps(best[k])}" for k in sweep.grid]))
    return {**cfg.to_dict(), "run_dir": None}


def write_outputs(directory: str, rows: list[dict[str, Any]], best: dict[str, Any] | None) -> dict[str, str]:
    rd = RunDir(directory)
    rd.write_text(layout.SUMMARY, json.dumps(rows, indent=1, default=str))
    out = {"summary": rd.uri(layout.SUMMARY)}
    if best is not None:
        rd.write_text(layout.BEST_CONFIG, yaml.safe_dump(best, sort_keys=False))
        out["best_config"] = rd.uri(layout.BEST_CONFIG)
    return out


@dataclass
class SweepResult:
    directory: str
    rows: list[dict[str, Any]]
    best: dict[str, Any] | None
    outputs: dict[str, str]
    parent_run_id: str | None
    wall_s: float


def _absolute(base: dict[str, Any]) -> dict[str, Any]:
    """Trials run in Tune's workers, elsewhere: local paths and the tracking store made absolute."""
    flat = flat_keys(base)
    fixes = []
    path = flat.get("data.path")
    if path and not is_uri(path):
        fixes.append(f"data.path={json.dumps(str(Path(path).expanduser().resolve()))}")
    if flat.get("tracking.enabled"):
        fixes.append(f"tracking.uri={json.dumps(resolve_tracking_uri(flat.get('tracking.uri')))}")
    return validate(apply_overrides(base, fixes)).to_dict()


def _parent_run(cfg: RunConfig, rd: RunDir, grid: dict[str, list[Any]]) -> RunTracking | None:
    """The sweep's MLflow run (re-opened when the sweep continues); no system metrics."""
    if not cfg.tracking.enabled:
        return None
    quiet = validate(apply_overrides(cfg.to_dict(), ["tracking.system_metrics=false"]))
    tracking = RunTracking(quiet, rd)
    tracking.open({"config": cfg.to_dict(), "grid": {k: json.dumps(v) for k, v in grid.items()}},
                  extra={"distmeta.sweep": "true"})
    return tracking


def run_sweep(base: RunConfig, grid_items: list[str], directory: str | None = None,
              options: SweepOptions | None = None, address: str | None = None) -> SweepResult:
    """Run (or continue) the sweep; its table, best config and parent run id."""
    options = options or SweepOptions()
    start = time.perf_counter()
    data = _absolute(base.to_dict())
    grid = parse_grid(grid_items, data)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    rd = RunDir(directory or f"runs/sweep-{base.name}-{stamp}")
    rd.makedirs()
    checked = validate(data)
    session = connect(address, runtime_env=runtime_env(checked), dashboard=checked.runtime.dashboard)
    tracking = _parent_run(checked, rd, grid)
    sweep = Sweep(data, grid, rd.location, options, tracking.run_id if tracking else None)
    try:
        rows = summary(_tuner(sweep, checked).fit(), sweep)
        best = best_config(rows, sweep)
        outputs = write_outputs(rd.location, rows, best)
        if tracking is not None:
            _report(tracking, rows, sweep, outputs)
    except BaseException:
        if tracking is not None:
            tracking.end("FAILED")
        raise
    finally:
        session.shutdown()
    return SweepResult(rd.location, rows, best, outputs, sweep.parent_run_id, time.perf_counter() - start)


def _tuner(sweep: Sweep, cfg: RunConfig) -> Any:
    """Tune's tuner of the sweep: a new one, or the one in ``SWEEP_DIR/tune`` to continue."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    trainable = tune.with_resources(functools.partial(run_trial, sweep=sweep), trial_resources(cfg))
    tune_dir = f"{sweep.directory}/{layout.TUNE}"
    if tune.Tuner.can_restore(tune_dir):
        log.info("continuing the sweep in %s", tune_dir)
        return tune.Tuner.restore(tune_dir, trainable, resume_errored=True)
    reports = -(-cfg.outer.steps // sweep.options.eval_every)
    # max_t beyond the last report: ASHA stops laggards, never a trial at its end
    scheduler = ASHAScheduler(metric=sweep.metric, mode=sweep.mode, max_t=reports + 1, grace_period=1,
                              reduction_factor=2)
    return tune.Tuner(trainable, param_space=param_space(sweep.grid), tune_config=tune.TuneConfig(
        scheduler=scheduler, num_samples=sweep.options.samples, max_concurrent_trials=sweep.options.max_concurrent),
        run_config=tune.RunConfig(name=layout.TUNE, storage_path=sweep.directory, verbose=0))


def _report(tracking: RunTracking, rows: list[dict[str, Any]], sweep: Sweep, outputs: dict[str, str]) -> None:
    """The sweep's run: its trials' runs ended, the outputs as artifacts, the best metric."""
    _close_children(tracking, rows, sweep)
    for name in outputs.values():
        if not is_uri(name):
            tracking.tracker.log_artifact(name)
    scored = [r[sweep.metric] for r in rows if r.get(sweep.metric) is not None]
    if scored:
        tracking.tracker.log_metrics(0, {f"best_{sweep.metric}": (min if sweep.mode == "min" else max)(scored)})
    tracking.end("FINISHED")


def _close_children(tracking: RunTracking, rows: list[dict[str, Any]], sweep: Sweep) -> None:
    """Trials that ASHA stopped or that failed never ended their own MLflow runs: end them."""
    mlflow_status = {"STOPPED": "KILLED", "FAILED": "FAILED"}
    ended = tracking.tracker.end_children({f"{sweep.directory}/{layout.trial(r['trial'])}":
                                           mlflow_status.get(r["status"], "KILLED") for r in rows})
    if ended:
        log.info("ended %d trial run(s) that stopped early or failed", ended)

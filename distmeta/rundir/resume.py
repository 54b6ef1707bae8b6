"""Where a run starts: a new run directory, or the one it continues.

``resume`` is one of
- ``None``: a new run; a run directory that already holds a run is refused;
- a run directory: continue it from its newest checkpoint; overrides change its config and
  are recorded in its ``config.yaml``;
- ``"auto"``: start in ``run_dir`` when it holds no run, continue when it holds the same
  experiment. This is what a requeued SLURM job, a KubeRay retry or a spot restart runs:
  the same command every time. Keys that change the results must match (the refusal names
  those that differ); keys that only say how to run (workers, time limit, timeouts,
  tracking, evaluation, checkpoint cadence) may differ, and the new values are recorded.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from distmeta.config import RunConfig, apply_overrides, differing_keys, parse_yaml, validate
from distmeta.errors import ConfigError, NotFound, RunExists
from distmeta.rundir import layout
from distmeta.rundir.checkpoint import checkpoint_steps
from distmeta.rundir.storage import RunDir
from distmeta.uri import REDACTED

log = logging.getLogger(__name__)
AUTO = "auto"
RUN_ONLY_PREFIXES = ("run_dir", "tracking.", "eval.", "checkpoint.", "data.on_error", "data.cache_mb",
                     "runtime.workers", "runtime.cpus_per_worker", "runtime.gpus_per_worker",
                     "runtime.threads_per_worker", "runtime.placement", "runtime.on_worker_loss",
                     "runtime.step_timeout_s", "runtime.server_timeout_s", "runtime.max_step_retries",
                     "runtime.time_limit_s", "runtime.stop_grace_s", "runtime.max_lag", "runtime.node_aggregation",
                     "runtime.placement_wait_s", "runtime.lease_timeout_s", "runtime.runtime_env",
                     "runtime.server_shards")
"""Key paths that say how a run is executed, not what it computes: they may change on resume."""


def changes_results(key: str) -> bool:
    return not any(key == p or key.startswith(p) for p in RUN_ONLY_PREFIXES)


def read_run_config(rd: RunDir) -> dict:
    if not rd.exists(layout.CONFIG):
        raise NotFound(f"--resume {rd.location}: no {layout.CONFIG} there; is it a distmeta run directory?")
    return parse_yaml(rd.read_text(layout.CONFIG))


def _record(rd: RunDir, old: dict, cfg: RunConfig) -> RunConfig:
    """Write the run's config again when the resume changed it, and say which keys changed."""
    changed = differing_keys(old, cfg.redacted_dict())
    if changed:
        log.info("resume changes %s; recorded in %s", ", ".join(changed), rd.uri(layout.CONFIG))
        rd.write_text(layout.CONFIG, cfg.to_yaml())
    return cfg


def _new(cfg: RunConfig, rd: RunDir) -> tuple[RunConfig, RunDir]:
    cfg = validate({**cfg.to_dict(), "run_dir": rd.location})
    rd.makedirs()
    rd.write_text(layout.CONFIG, cfg.to_yaml())
    return cfg, rd


def _auto(cfg: RunConfig | None, rd: RunDir) -> tuple[RunConfig, RunDir]:
    if cfg is None:
        raise ConfigError("--resume auto: give the config file too (it starts the run when the run dir is empty)")
    if not rd.exists(layout.CONFIG):
        log.info("--resume auto: no run in %s yet; starting one", rd.location)
        return _new(cfg, rd)
    old = read_run_config(rd)
    new = validate({**cfg.to_dict(), "run_dir": rd.location})
    differ = [k for k in differing_keys(validate(old).redacted_dict(), new.redacted_dict()) if changes_results(k)]
    if differ:
        raise ConfigError(f"--resume auto: {rd.location} holds a run of a different config; keys that differ: "
                          f"{', '.join(differ)} (continue it with --resume {rd.location} and those keys as "
                          "overrides, or choose another --run-dir)")
    log.info("--resume auto: continuing the run in %s", rd.location)
    return _record(rd, old, new), rd


def _needs_credentials(cfg: RunConfig, rd: RunDir) -> RunConfig:
    """Refuse a resume whose data location lost its credentials to redaction, naming the key."""
    if REDACTED in (cfg.data.path or ""):
        raise ConfigError(f"--resume {rd.location}: data.path holds credentials, which {layout.CONFIG} keeps "
                          f"redacted ({cfg.data.path}); give it again as the override data.path=..., or "
                          "pass the credentials through the storage's environment variables")
    return cfg


def open_run(cfg: RunConfig | None, run_dir: str | None, resume: str | None,
             overrides: list[str] | None = None) -> tuple[RunConfig, RunDir]:
    """The validated config and run directory of a new, continued or auto-resumed run."""
    if resume == AUTO:
        location = run_dir or (cfg.run_dir if cfg is not None else None)
        if not location:
            raise ConfigError("--resume auto needs --run-dir (or run_dir in the config): where to start or continue")
        return _auto(cfg, RunDir(location))
    if resume:
        rd = RunDir(resume)
        old = read_run_config(rd)
        cfg = _needs_credentials(validate(apply_overrides(old, overrides or [])), rd)
        return _record(rd, old, cfg), rd
    if cfg is None:
        raise ConfigError("train: give a config, or resume= a run directory")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    rd = RunDir(run_dir or cfg.run_dir or f"runs/{cfg.name}-{stamp}")
    if rd.exists(layout.CONFIG):
        raise RunExists(f"run_dir {rd.location} already holds a run; continue it with --resume {rd.location} "
                              "(or --resume auto)")
    return _new(cfg, rd)


def run_progress(location: str) -> tuple[int, int]:
    """(newest checkpoint's step, ``outer.steps``) of the run in ``location``; (0, steps) before
    its first checkpoint. Cluster scripts use it to decide whether to requeue."""
    rd = RunDir(location)
    cfg = validate(read_run_config(rd))
    steps = checkpoint_steps(rd)
    return (steps[-1] if steps else 0), cfg.outer.steps

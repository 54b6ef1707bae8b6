"""The subcommands: each imports the rooms it needs (torch, Ray, MLflow) when it runs, so
``distmeta --help`` stays instant."""

from __future__ import annotations

import argparse
import logging
import os

from distmeta.cli import split_config_and_overrides
from distmeta.cli.logs import Redacting, plain_formatter
from distmeta.cli.progress import TrainingProgress, print_evaluation, print_summary, print_sweep
from distmeta.errors import ConfigError, NotFound

log = logging.getLogger("distmeta.cli")


def attach_log_file(run_dir: str) -> None:
    """Everything distmeta logs (progress lines included) also goes to ``RUN_DIR/train.log``
    when the run dir is a local path (on a URI it stays with the job's own log)."""
    from distmeta.rundir import layout
    from distmeta.uri import is_uri

    if is_uri(run_dir):
        return
    path = os.path.join(run_dir, layout.LOG)
    handler = logging.FileHandler(path)
    os.chmod(path, 0o600)  # the owner's only, as every run file
    handler.setFormatter(plain_formatter())
    handler.addFilter(Redacting())
    logging.getLogger().addHandler(handler)
    log.info("logging to %s", path)


def cmd_train(args: argparse.Namespace) -> int:
    from distmeta.config import load_config
    from distmeta.runtime.run import Callbacks, Run

    path, overrides = split_config_and_overrides(args.items)
    overrides += [f"tracking.registered_model={args.register}"] if args.register else []
    if path is None and (not args.resume or args.resume == "auto"):
        raise ConfigError("train: give a config file (e.g. configs/sinusoid_maml.yaml) or --resume RUN_DIR")
    cfg = load_config(path, overrides) if path is not None else None
    run = Run.open(cfg, run_dir=args.run_dir, resume=args.resume, overrides=overrides if cfg is None else None)
    with TrainingProgress(every_s=args.progress_every) as progress:
        def on_start(run_dir, cfg, first_step):
            attach_log_file(run_dir)
            progress.start(run_dir, cfg, first_step)

        result = run.train(address=args.address, until_step=args.until_step,
                           callbacks=Callbacks(on_start=on_start, on_step=progress.step),
                           evaluate_at_end=not args.no_eval)
    print_summary(result)
    return result.exit_code


def cmd_sweep(args: argparse.Namespace) -> int:
    from distmeta.config import load_config
    from distmeta.runtime.sweep import SweepOptions, run_sweep

    path, overrides = split_config_and_overrides(args.items)
    if path is None:
        raise ConfigError("sweep: give a config file, then --grid key=value1,value2 ...")
    options = SweepOptions(metric=args.metric, eval_every=args.eval_every, eval_episodes=args.eval_episodes,
                           samples=args.samples, max_concurrent=args.max_concurrent)
    result = run_sweep(load_config(path, overrides), args.grid, args.dir, options, address=args.address)
    print_sweep(result)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from distmeta.config import load_config

    path, overrides = split_config_and_overrides(args.items)
    print(load_config(path, overrides).to_yaml(), end="")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from distmeta.runtime.run import evaluate_target

    report = evaluate_target(args.target, split=args.split, steps=args.steps, episodes=args.episodes,
                             track=not args.no_track)
    print_evaluation(report)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Plot one metric of several runs (from their MLflow runs) in one figure, and print
    each run's last value."""
    from distmeta.rundir import layout
    from distmeta.rundir.storage import RunDir
    from distmeta.tracking.history import metric_history
    from distmeta.tracking.plots import compare_curves

    runs = {}
    for location in args.runs:
        rd = RunDir(location)
        tracked = layout.read_tracking(rd)
        if tracked is None:
            raise NotFound(f"{location}: no {layout.TRACKING} (not a tracked run directory)")
        runs[layout.run_name(rd)] = metric_history(tracked["uri"], tracked["run_id"], args.metric)
    out = compare_curves(runs, args.out, args.metric, title=args.title, log_y=args.log_y)
    for label, points in runs.items():
        print(f"{label}: {args.metric} {points[-1][1]:.4g} at step {points[-1][0]}")
    print(f"wrote {out}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from distmeta.cli.data import run_data_command

    return run_data_command(args)


def cmd_export(args: argparse.Namespace) -> int:
    from distmeta.tracking.trained import export

    for path in export(args.source, args.out, args.format, args.step):
        print(f"wrote {path}")
    return 0

"""``distmeta train | sweep | eval | config | data | bench``.

Errors in what the user gave (config keys, files, values) print one line naming the key or
file and exit with status 2, without a traceback. ``key=value`` overrides may stand anywhere
on the line, and ``-v`` before or after the subcommand. This module imports no torch, so
``distmeta --help`` answers at once; each command imports what it needs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from distmeta.errors import ConfigError

EXIT_USAGE = 2
CHATTY = ("ray", "mlflow", "alembic", "urllib3", "matplotlib", "PIL", "filelock", "py.warnings")


class _PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")


def _setup_logging(verbose: bool) -> None:
    """A terminal gets rich log lines and a live bar; anything else (a log file, ``ray job
    logs``, ``kubectl logs``) plain timestamped lines, with the progress lines on stdout. Ray's
    and MLflow's own INFO lines are held back unless ``-v``."""
    from distmeta.progress import console, progress_log

    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if console.is_terminal:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=False, console=console)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(lambda record: record.name != progress_log.name)  # the bar shows it
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_PlainFormatter())
        handler.addFilter(lambda record: record.name != progress_log.name)
        out = logging.StreamHandler(sys.stdout)
        out.setFormatter(_PlainFormatter())
        out.addFilter(lambda record: record.name == progress_log.name)
        root.addHandler(out)
    root.addHandler(handler)
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)
    if not verbose:  # MLflow resets its loggers' level from this when it is imported
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


def attach_log_file(run_dir: str) -> None:
    """Everything distmeta logs (progress lines included) also goes to ``RUN_DIR/train.log``
    when the run dir is a local path (on a URI it stays with the job's own log)."""
    if "://" in run_dir:
        return
    path = os.path.join(run_dir, "train.log")
    handler = logging.FileHandler(path)
    handler.setFormatter(_PlainFormatter())
    logging.getLogger().addHandler(handler)
    logging.getLogger(__name__).info("logging to %s", path)


def _split_config_and_overrides(items: list[str]) -> tuple[str | None, list[str]]:
    if items and "=" not in items[0]:
        return items[0], items[1:]
    return None, items


def cmd_train(args: argparse.Namespace) -> int:
    from distmeta.config import load_config
    from distmeta.progress import TrainingProgress, print_summary
    from distmeta.runtime.train import Callbacks, train

    path, overrides = _split_config_and_overrides(args.items)
    overrides += [f"tracking.registered_model={args.register}"] if args.register else []
    if path is None and (not args.resume or args.resume == "auto"):
        raise ConfigError("train: give a config file (e.g. configs/sinusoid_maml.yaml) or --resume RUN_DIR")
    cfg = load_config(path, overrides) if path is not None else None
    with TrainingProgress(every_s=args.progress_every) as progress:
        def on_start(run_dir, cfg, first_step):
            attach_log_file(run_dir)
            progress.start(run_dir, cfg, first_step)

        result = train(cfg, run_dir=args.run_dir, resume=args.resume, overrides=overrides if cfg is None else None,
                       address=args.address, until_step=args.until_step,
                       callbacks=Callbacks(on_start=on_start, on_step=progress.step),
                       evaluate_at_end=not args.no_eval)
    print_summary(result)
    return result.exit_code


def cmd_sweep(args: argparse.Namespace) -> int:
    from distmeta.config import load_config
    from distmeta.progress import print_sweep
    from distmeta.runtime.sweep import run_sweep

    path, overrides = _split_config_and_overrides(args.items)
    if path is None:
        raise ConfigError("sweep: give a config file, then --grid key=value1,value2 ...")
    result = run_sweep(load_config(path, overrides), args.grid, args.dir, samples=args.samples,
                       max_concurrent=args.max_concurrent, metric=args.metric, eval_every=args.eval_every,
                       eval_episodes=args.eval_episodes, address=args.address)
    print_sweep(result)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from distmeta.config import load_config

    path, overrides = _split_config_and_overrides(args.items)
    print(load_config(path, overrides).to_yaml(), end="")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from distmeta.evaluation import evaluate_run
    from distmeta.progress import print_evaluation

    report = evaluate_run(args.target, split=args.split, steps=args.steps, episodes=args.episodes,
                          log_to_tracker=not args.no_track)
    print_evaluation(report)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Plot one metric of several runs (from their MLflow runs) in one figure, and print
    each run's last value."""
    import json

    from distmeta.runtime.report import TRACKING_FILE
    from distmeta.runtime.storage import RunDir
    from distmeta.tracking.history import metric_history
    from distmeta.tracking.plots import compare_curves

    runs = {}
    for location in args.runs:
        rd = RunDir(location)
        if not rd.exists(TRACKING_FILE):
            raise FileNotFoundError(f"{location}: no {TRACKING_FILE} (not a tracked run directory)")
        tracked = json.loads(rd.read_text(TRACKING_FILE))
        runs[location.rstrip("/").rsplit("/", 1)[-1]] = metric_history(tracked["uri"], tracked["run_id"], args.metric)
    out = compare_curves(runs, args.out, args.metric, title=args.title, log_y=args.log_y)
    for label, points in runs.items():
        print(f"{label}: {args.metric} {points[-1][1]:.4g} at step {points[-1][0]}")
    print(f"wrote {out}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from distmeta.data.cli import run_data_command

    return run_data_command(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from distmeta.bench.run import run_bench

    run_bench(args.out, quick=args.quick, only=args.only)
    return 0


class KeysHelp(argparse.Action):
    """``-h``: the command's help, then every config key with its default (imported only now)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show this help and every config key with its default")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from distmeta.config_keys import describe

        parser.print_help()
        print("\n" + describe())
        parser.exit()


def _verbose(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="debug logs, and Ray's and MLflow's own INFO lines")


def _config_items(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("items", nargs="*", metavar="CONFIG [key=value ...]",
                        help="config YAML, then key=value overrides (anywhere on the line)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distmeta", description="Distributed meta-learning on Ray, tracked in MLflow.",
                                     epilog="`distmeta config --help` lists every config key with its default.")
    _verbose(parser, False)
    sub = parser.add_subparsers(dest="command", required=True)
    common = dict(add_help=False)

    t = sub.add_parser("train", help="meta-train from a config (local Ray, or --address a cluster)", **common)
    t.add_argument("-h", "--help", action=KeysHelp)
    _verbose(t, argparse.SUPPRESS)
    _config_items(t)
    t.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else start a local Ray)")
    t.add_argument("--run-dir", default=None, help="run directory: local path or pyarrow.fs URI (s3://...)")
    t.add_argument("--resume", default=None, metavar="RUN_DIR|auto",
                   help="continue the run in RUN_DIR from its newest checkpoint; 'auto': start in --run-dir when it "
                        "holds no run, continue it when it holds the same config (for requeued and retried jobs)")
    t.add_argument("--until-step", type=int, default=None, help="stop after this step (resume later with --resume)")
    t.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation at the end")
    t.add_argument("--register", default=None, metavar="NAME",
                   help="also register the logged MLflow model under NAME (tracking.registered_model)")
    t.add_argument("--progress-every", type=float, default=30.0, metavar="SECONDS",
                   help="when stdout is not a terminal: one progress line every SECONDS (default 30)")
    t.set_defaults(func=cmd_train)

    w = sub.add_parser("sweep", help="a grid of training runs on Ray Tune, with ASHA early stopping", **common)
    w.add_argument("-h", "--help", action=KeysHelp)
    _verbose(w, argparse.SUPPRESS)
    _config_items(w)
    w.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="values of one config key to try (repeat for more keys: their product is the grid)")
    w.add_argument("--samples", type=int, default=1, help="repeats of the grid (default 1)")
    w.add_argument("--max-concurrent", type=int, default=1, help="trials running at once (default 1)")
    w.add_argument("--metric", default="val_query_loss", choices=["val_query_loss", "val_query_acc"],
                   help="what ASHA and the best config go by: post-adaptation loss or accuracy on val tasks")
    w.add_argument("--eval-every", type=int, default=50, metavar="STEPS", help="validate every STEPS steps")
    w.add_argument("--eval-episodes", type=int, default=100, help="validation episodes per report")
    w.add_argument("--dir", default=None, help="sweep directory (default runs/sweep-NAME-TIME); "
                   "the same command with the same --dir continues an interrupted sweep")
    w.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    w.set_defaults(func=cmd_sweep)

    c = sub.add_parser("config", help="print the resolved config (defaults filled in, overrides applied)", **common)
    c.add_argument("-h", "--help", action=KeysHelp)
    _verbose(c, argparse.SUPPRESS)
    _config_items(c)
    c.set_defaults(func=cmd_config)

    e = sub.add_parser("eval", help="meta-test a run or a checkpoint on held-out tasks")
    _verbose(e, argparse.SUPPRESS)
    e.add_argument("target", metavar="RUN_DIR|CHECKPOINT")
    e.add_argument("--split", default=None, help="split to evaluate (default: the config's eval.split)")
    e.add_argument("--steps", type=int, default=None, help="inner steps at test time")
    e.add_argument("--episodes", type=int, default=None, help="held-out episodes (default: eval.episodes)")
    e.add_argument("--no-track", action="store_true", help="do not log to the run's MLflow run")
    e.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="plot one metric of several runs in one figure")
    _verbose(p, argparse.SUPPRESS)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--metric", required=True, help="e.g. principal_angle_distance, query_loss (train/ is implied)")
    p.add_argument("--out", default="compare.png", help="PNG to write")
    p.add_argument("--title", default=None)
    p.add_argument("--log-y", action="store_true", help="logarithmic y axis")
    p.set_defaults(func=cmd_compare)

    from distmeta.data.cli import add_data_parser

    add_data_parser(sub, cmd_data)

    b = sub.add_parser("bench", help="benchmarks, measured side by side in one run")
    _verbose(b, argparse.SUPPRESS)
    b.add_argument("--out", default="bench.json", help="where to write the results as JSON")
    b.add_argument("--quick", action="store_true", help="fewer repeats (for a smoke run)")
    b.add_argument("--only", nargs="*", default=None, help="run only these sections")
    b.set_defaults(func=cmd_bench)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the line; ``key=value`` overrides after options join the config's items."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "items") and all(not x.startswith("-") for x in extra):
        args.items = [*args.items, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as exc:
        if args.verbose or os.environ.get("DISTMETA_TRACEBACK"):
            raise
        print(f"distmeta: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("distmeta: interrupted; continue with --resume RUN_DIR", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``distmeta train | eval | data | bench``.

Errors in what the user gave (config keys, files, values) print one line naming the key or
file and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from distmeta.config import ConfigError

EXIT_USAGE = 2


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(show_path=False, rich_tracebacks=False)])
    for noisy in ("urllib3", "alembic", "mlflow", "matplotlib", "PIL", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _split_config_and_overrides(items: list[str]) -> tuple[str | None, list[str]]:
    if items and "=" not in items[0]:
        return items[0], items[1:]
    return None, items


def cmd_train(args: argparse.Namespace) -> int:
    from distmeta.config import load_config
    from distmeta.progress import TrainingProgress, print_summary
    from distmeta.runtime.train import Callbacks, train

    path, overrides = _split_config_and_overrides(args.items)
    if path is None and not args.resume:
        raise ConfigError("train: give a config file (e.g. configs/sinusoid_maml.yaml) or --resume RUN_DIR")
    cfg = load_config(path, overrides) if path is not None else None
    with TrainingProgress() as progress:
        result = train(cfg, run_dir=args.run_dir, resume=args.resume, overrides=overrides if cfg is None else None,
                       address=args.address, until_step=args.until_step,
                       callbacks=Callbacks(on_start=progress.start, on_step=progress.step),
                       evaluate_at_end=not args.no_eval)
    print_summary(result)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from distmeta.evaluation import evaluate_run
    from distmeta.progress import print_evaluation

    report = evaluate_run(args.target, split=args.split, steps=args.steps, episodes=args.episodes,
                          log_to_tracker=not args.no_track)
    print_evaluation(report)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from distmeta.data.cli import run_data_command

    return run_data_command(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from distmeta.bench.run import run_bench

    run_bench(args.out, quick=args.quick, only=args.only)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distmeta", description="Distributed meta-learning on Ray, tracked in MLflow.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="meta-train from a config (local Ray, or --address a cluster)")
    t.add_argument("items", nargs="*", metavar="CONFIG [key=value ...]", help="config YAML and overrides")
    t.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else start a local Ray)")
    t.add_argument("--run-dir", default=None, help="run directory: local path or pyarrow.fs URI (s3://...)")
    t.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR from its newest checkpoint")
    t.add_argument("--until-step", type=int, default=None, help="stop after this step (resume later with --resume)")
    t.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation at the end")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="meta-test a run or a checkpoint on held-out tasks")
    e.add_argument("target", metavar="RUN_DIR|CHECKPOINT")
    e.add_argument("--split", default=None, help="split to evaluate (default: the config's eval.split)")
    e.add_argument("--steps", type=int, default=None, help="inner steps at test time")
    e.add_argument("--episodes", type=int, default=None, help="held-out episodes (default: eval.episodes)")
    e.add_argument("--no-track", action="store_true", help="do not log to the run's MLflow run")
    e.set_defaults(func=cmd_eval)

    from distmeta.data.cli import add_data_parser

    add_data_parser(sub, cmd_data)

    b = sub.add_parser("bench", help="benchmarks, measured side by side in one run")
    b.add_argument("--out", default="bench.json", help="where to write the results as JSON")
    b.add_argument("--quick", action="store_true", help="fewer repeats (for a smoke run)")
    b.add_argument("--only", nargs="*", default=None, help="run only these sections")
    b.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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

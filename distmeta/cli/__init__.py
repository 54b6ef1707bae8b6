"""``distmeta train | sweep | eval | config | compare | export | data``.

Errors in what the user gave (config keys, files, values: :class:`distmeta.errors.DistmetaError`)
print one line naming the key or file and exit with status 2, without a traceback; any other
error is a bug and keeps its traceback. ``key=value`` overrides may stand anywhere
on the line, and ``-v`` before or after the subcommand. This module imports no torch, so
``distmeta --help`` and ``--version`` answer at once; each command imports what it needs.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from distmeta import __version__
from distmeta.cli.data import add_data_parser
from distmeta.errors import DistmetaError
from distmeta.runtime.stop import exit_code

EXIT_USAGE = 2
__all__ = ["EXIT_USAGE", "build_parser", "main", "parse_args", "split_config_and_overrides"]


class KeysHelp(argparse.Action):
    """``-h``: the command's help, then every config key with its default (imported only now)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show this help and every config key with its default")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from distmeta.config.keys import describe
        from distmeta.config.loading import read_yaml

        parser.print_help()
        path, _ = split_config_and_overrides(list(getattr(namespace, "items", None) or []))
        data = {}
        if path is not None:
            from pathlib import Path

            from distmeta import plugins

            plugins.search_paths(Path(path).resolve().parent)
            data = read_yaml(path)
        print("\n" + describe(data))
        parser.exit()


def _verbose(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="debug logs, and Ray's and MLflow's own INFO lines")


def _config_items(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("items", nargs="*", metavar="CONFIG [key=value ...]",
                        help="config YAML, then key=value overrides (anywhere on the line)")


def split_config_and_overrides(items: list[str]) -> tuple[str | None, list[str]]:
    """``[CONFIG, key=value, ...]`` -> (CONFIG, overrides); the config file may be left out."""
    if items and "=" not in items[0]:
        return items[0], items[1:]
    return None, items


def _command(sub: Any, name: str, help: str, func: str, keys: bool = False) -> argparse.ArgumentParser:
    """A subcommand with ``-v``; ``keys``: it takes a config and its ``-h`` lists every key;
    ``func``: its function in :mod:`distmeta.cli.commands` (imported when it runs)."""
    parser = sub.add_parser(name, help=help, add_help=not keys)
    if keys:
        parser.add_argument("-h", "--help", action=KeysHelp)
    _verbose(parser, argparse.SUPPRESS)
    if keys:
        _config_items(parser)
    parser.set_defaults(func=func)
    return parser


def _add_train(sub: Any) -> None:
    t = _command(sub, "train", "meta-train from a config (local Ray, or --address a cluster)", "cmd_train", True)
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


def _add_sweep(sub: Any) -> None:
    w = _command(sub, "sweep", "a grid of training runs on Ray Tune, with ASHA early stopping", "cmd_sweep",
                 True)
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


def _add_eval_compare_export(sub: Any) -> None:
    e = _command(sub, "eval", "meta-test a run or a checkpoint on held-out tasks", "cmd_eval")
    e.add_argument("target", metavar="RUN_DIR|CHECKPOINT")
    e.add_argument("--split", default=None, help="split to evaluate (default: the config's eval.split)")
    e.add_argument("--steps", type=int, default=None, help="inner steps at test time")
    e.add_argument("--episodes", type=int, default=None, help="held-out episodes (default: eval.episodes)")
    e.add_argument("--no-track", action="store_true", help="do not log to the run's MLflow run")
    p = _command(sub, "compare", "plot one metric of several runs in one figure", "cmd_compare")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--metric", required=True, help="e.g. principal_angle_distance, query_loss (train/ is implied)")
    p.add_argument("--out", default="compare.png", help="PNG to write")
    p.add_argument("--title", default=None)
    p.add_argument("--log-y", action="store_true", help="logarithmic y axis")
    x = _command(sub, "export", "write a run's trained weights and its config to a folder", "cmd_export")
    x.add_argument("source", metavar="RUN_DIR|CHECKPOINT|MODEL_URI", help="a run, a checkpoint, models:/... or runs:/...")
    x.add_argument("--out", required=True, help="the folder to write model.safetensors (and rule.*), config.yaml to")
    x.add_argument("--format", default="safetensors", choices=["safetensors", "pt"], help="safetensors (default) or pt")
    x.add_argument("--step", type=int, default=None, help="the checkpoint of this step (default: the newest)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distmeta", description="Distributed meta-learning on Ray, tracked in MLflow.",
                                     epilog="`distmeta config --help` lists every config key with its default.")
    _verbose(parser, False)
    parser.add_argument("--version", action="version", version=f"distmeta {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_sweep(sub)
    _command(sub, "config", "print the resolved config (defaults filled in, overrides applied)", "cmd_config",
             True)
    _add_eval_compare_export(sub)
    add_data_parser(sub, "cmd_data")
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
    from distmeta.cli import commands, logs  # what the command needs, imported once it is known

    logs.setup_logging(args.verbose)
    try:
        return getattr(commands, args.func)(args)
    except DistmetaError as exc:
        if args.verbose or os.environ.get("DISTMETA_TRACEBACK"):
            raise
        print(f"distmeta: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("distmeta: interrupted; continue with --resume RUN_DIR", file=sys.stderr)
        return exit_code(signal.SIGINT)

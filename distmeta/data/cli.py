"""``distmeta data pack | info | verify``: episode shards from the command line."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
SOURCES = ("omniglot", "imagefolder", "sinusoid", "linear_rep")


def add_data_parser(sub: Any, func: Callable[[argparse.Namespace], int]) -> None:
    d = sub.add_parser("data", help="pack, describe and verify episode shards")
    dsub = d.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser("pack", help="write train/val/test shards and manifest.parquet")
    p.add_argument("source", choices=SOURCES)
    p.add_argument("--out", required=True, help="dataset directory (local path or pyarrow.fs URI)")
    p.add_argument("--root", default=None, help="source folder (Omniglot arrays or an image folder)")
    p.add_argument("--way", type=int, default=5)
    p.add_argument("--shot", type=int, default=1)
    p.add_argument("--query", type=int, default=None,
                   help="query examples per class (default: 1 for Omniglot as in Finn et al. 2017, else 15)")
    p.add_argument("--train", type=int, default=10000, help="episodes in the train split")
    p.add_argument("--val", type=int, default=600)
    p.add_argument("--test", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=None, help="resize to this (28 for Omniglot, 84 for image folders)")
    p.add_argument("--limit-classes", type=int, default=None, help="Omniglot: keep this many characters per split")
    p.add_argument("--maxcount", type=int, default=100, help="episodes per shard file")
    p.add_argument("--x-dtype", choices=("float32", "uint8"), default=None,
                   help="how inputs are stored (default: uint8 for images, 4x smaller; float32 otherwise)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="procedural family parameter, e.g. --param shots=5")
    p.set_defaults(func=func)
    for name, text in (("info", "describe a dataset from its manifest"), ("verify", "check every shard against the manifest")):
        q = dsub.add_parser(name, help=text)
        q.add_argument("path")
        q.add_argument("--split", default=None)
        q.set_defaults(func=func)


def _family(args: argparse.Namespace):
    from distmeta.config import parse_yaml
    from distmeta.tasks import LinearRepresentation, Sinusoid

    params: dict[str, Any] = {}
    for item in args.param:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--param {item!r}: expected KEY=VALUE")
        params[key] = parse_yaml(raw)
    cls = Sinusoid if args.source == "sinusoid" else LinearRepresentation
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"--param: {exc}") from None


def pack(args: argparse.Namespace) -> Any:
    from distmeta.data import ShardLayout, pack_image_folder, pack_omniglot, pack_procedural
    from distmeta.runtime.sources import DEFAULT_OMNIGLOT

    x_dtype = args.x_dtype or ("float32" if args.source in ("sinusoid", "linear_rep") else "uint8")
    layout = ShardLayout(maxcount=args.maxcount, x_dtype=x_dtype)
    episodes = {k: v for k, v in (("train", args.train), ("val", args.val), ("test", args.test)) if v}
    query = args.query if args.query is not None else (1 if args.source == "omniglot" else 15)
    common = {"way": args.way, "shot": args.shot, "query": query, "seed": args.seed, "layout": layout, "progress": True}
    if args.source == "omniglot":
        import os

        root = args.root or os.environ.get("DISTMETA_OMNIGLOT") or os.path.expanduser(DEFAULT_OMNIGLOT)
        return pack_omniglot(root, args.out, episodes, image_size=args.image_size or 28,
                             limit_classes=args.limit_classes, **common)
    if args.source == "imagefolder":
        if not args.root:
            raise ValueError("data pack imagefolder: --root FOLDER is required (one sub-folder per class)")
        manifest = None
        for split, n in episodes.items():
            manifest = pack_image_folder(f"{args.root}/{split}", args.out, split, n,
                                         image_size=args.image_size or 84, **common)
        return manifest
    return pack_procedural(_family(args), args.out, episodes, seed=args.seed, layout=layout, progress=True)


def run_data_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    if args.data_command == "pack":
        pack(args)
        console.print(f"wrote shards and manifest.parquet to [bold]{args.out}[/]")
        return 0
    from distmeta.data import Manifest, ShardEpisodeSource

    if args.data_command == "info":
        splits = [args.split] if args.split else Manifest.read(args.path).splits()
        for split in splits:
            console.print_json(json.dumps(ShardEpisodeSource(args.path, split).describe(), default=str))
        return 0
    split = args.split or "train"
    skipped = ShardEpisodeSource(args.path, split, on_error="raise", verify="open").skipped
    console.print(f"{args.path} [{split}]: every shard matches the manifest" if not skipped else f"skipped: {skipped}")
    return 0

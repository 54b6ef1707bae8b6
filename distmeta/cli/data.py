"""``distmeta data pack | info | verify``: class shards and episode pools from the command line."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from distmeta.errors import ConfigError

log = logging.getLogger(__name__)
IMAGE_SOURCES = ("omniglot", "mini-imagenet", "tiered-imagenet", "cifar-fs", "fc100", "imagefolder", "meta-dataset")
PROCEDURAL = ("sinusoid", "linear_rep")
SOURCES = IMAGE_SOURCES + PROCEDURAL
SIZES = {"omniglot": 28, "cifar-fs": 32, "fc100": 32}


def add_data_parser(sub: Any, func: str) -> None:
    d = sub.add_parser("data", help="pack, describe and verify shards")
    dsub = d.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser(
        "pack", help="write train/val/test shards and manifest.parquet",
        description="Image data sets become class shards (one record per class; episodes are "
                    "sampled from them at every step). Procedural families become fixed pools of episodes.")
    p.add_argument("source", choices=SOURCES)
    p.add_argument("--out", required=True, help="dataset directory (local path or pyarrow.fs URI)")
    p.add_argument("--root", default=None,
                   help="the source on disk: Omniglot arrays, mini-ImageNet (images/ + train/val/test.csv), "
                        "tiered-ImageNet or an image folder (train/ val/ test/ of class folders), the "
                        "directory holding cifar-100-python/, or Meta-Dataset's records (the official "
                        "conversion: a folder per source of {class}.tfrecords + dataset_spec.json)")
    p.add_argument("--image-size", type=int, default=None,
                   help="resize to this (default: 28 Omniglot, 32 CIFAR-FS/FC100, 84 otherwise)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="1 (grey) or 3 (RGB; default except Omniglot, which is grey unless asked)")
    p.add_argument("--split-file", default=None,
                   help="imagefolder: JSON {train: [classes], val: [...], test: [...]} or CSV class,split "
                        "for a single class-folder tree")
    p.add_argument("--source", dest="md_source", default="all", metavar="NAME|all",
                   help="meta-dataset: the source folder under --root (ilsvrc_2012, omniglot, aircraft, ...), or all "
                        "of them (each packed to OUT/NAME)")
    p.add_argument("--csv-dir", default=None, help="mini-ImageNet: where train/val/test.csv are (default: --root)")
    p.add_argument("--download", action="store_true", help="CIFAR-FS / FC100: fetch CIFAR-100 into --root first")
    p.add_argument("--limit-classes", type=int, default=None, help="Omniglot: keep this many characters per split")
    p.add_argument("--maxcount", type=int, default=None,
                   help="records per shard file (default: 16 classes, or 100 episodes)")
    p.add_argument("--train", type=int, default=10000, help="procedural: episodes in the train split")
    p.add_argument("--val", type=int, default=600, help="procedural: episodes in the val split")
    p.add_argument("--test", type=int, default=600, help="procedural: episodes in the test split")
    p.add_argument("--seed", type=int, default=0, help="procedural: packing seed")
    p.add_argument("--x-dtype", choices=("float32", "uint8"), default="float32", help="procedural: input storage")
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
    from distmeta.tasks import build_task

    params: dict[str, Any] = {}
    for item in args.param:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE")
        params[key] = parse_yaml(raw)
    try:
        return build_task(args.source, **params)
    except TypeError as exc:
        raise ConfigError(f"--param: {exc}") from None


def _root(args: argparse.Namespace) -> str:
    if args.source == "omniglot":
        from distmeta.data import omniglot_root

        return omniglot_root(args.root)
    if not args.root:
        raise ConfigError(f"data pack {args.source}: --root is required (see distmeta data pack --help)")
    return args.root


def pack_images(args: argparse.Namespace) -> Any:
    """Class shards of an image data set."""
    from distmeta.data import ShardLayout

    root, size = _root(args), args.image_size or SIZES.get(args.source, 84)
    common: dict[str, Any] = {"progress": True}
    if args.maxcount:
        common["layout"] = ShardLayout(maxcount=args.maxcount, maxsize=256e6)
    if args.source == "omniglot":
        from distmeta.data import pack_omniglot

        return pack_omniglot(root, args.out, image_size=size, channels=args.channels or 1,
                             limit_classes=args.limit_classes, **common)
    if args.source in ("cifar-fs", "fc100"):
        from distmeta.data.cifar import pack_cifar_fs, pack_fc100

        packer = pack_cifar_fs if args.source == "cifar-fs" else pack_fc100
        return packer(root, args.out, download=args.download, **common)
    if args.source == "meta-dataset":
        from distmeta.data import pack_meta_dataset

        return pack_meta_dataset(root, args.out, args.md_source, image_size=size, **common)
    if args.source == "mini-imagenet":
        from distmeta.data.imagenet import pack_mini_imagenet

        return pack_mini_imagenet(root, args.out, image_size=size, csv_dir=args.csv_dir, **common)
    from distmeta.data.image_folder import pack_image_folder, pack_tiered_imagenet

    if args.source == "tiered-imagenet":
        return pack_tiered_imagenet(root, args.out, image_size=size, **common)
    return pack_image_folder(root, args.out, image_size=size, channels=args.channels or 3,
                             split_file=args.split_file, **common)


def pack(args: argparse.Namespace) -> Any:
    if args.source in IMAGE_SOURCES:
        return pack_images(args)
    from distmeta.data import ShardLayout, pack_procedural

    layout = ShardLayout(maxcount=args.maxcount or 100, x_dtype=args.x_dtype)
    episodes = {k: v for k, v in (("train", args.train), ("val", args.val), ("test", args.test)) if v}
    return pack_procedural(_family(args), args.out, episodes, seed=args.seed, layout=layout, progress=True)


def _reader(path: str, split: str, on_error: str = "raise") -> Any:
    from distmeta.data import ClassShards, Manifest, ShardEpisodeSource

    if Manifest.read(path).split(split).is_classes:
        return ClassShards(path, split, on_error=on_error)  # type: ignore[arg-type]
    return ShardEpisodeSource(path, split, on_error=on_error)  # type: ignore[arg-type]


def run_data_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    from distmeta.data import Manifest

    if args.data_command == "pack":
        packed = pack(args)
        for out, manifest in (((d, Manifest.read(d)) for d in packed.values()) if isinstance(packed, dict)
                              else [(args.out, packed)]):
            counts = ", ".join(f"{s}: {i.classes} classes / {i.images} images" if i.is_classes else
                               f"{s}: {i.episodes} episodes"
                               for s in manifest.splits for i in [manifest.split(s)])
            console.print(f"wrote shards and manifest.parquet to [bold]{out}[/] ({counts})", soft_wrap=True)
        if isinstance(packed, dict):
            console.print(f"train on them with task.family=meta_dataset 'data.sources={json.dumps(list(packed.values()))}'",
                          soft_wrap=True, markup=False)
        return 0

    splits = [args.split] if args.split else Manifest.read(args.path).splits
    if args.data_command == "info":
        for split in splits:
            console.print_json(json.dumps(_reader(args.path, split).describe(), default=str))
        return 0
    for split in splits:
        _reader(args.path, split).verify()
        console.print(f"{args.path} [{split}]: every shard matches the manifest")
    return 0

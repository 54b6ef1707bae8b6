"""Image folders as class shards: split folders, or a class tree plus a split file; and
tiered-ImageNet.

Two layouts under ``root``:

(a) ``root/train/<class>/<image>``, optionally with ``root/val/`` and ``root/test/``: each
    split folder holds one folder per class. tiered-ImageNet (Ren et al., "Meta-Learning for
    Semi-Supervised Few-Shot Classification", ICLR 2018: 608 ImageNet classes in 34
    high-level categories, split by category into 351 / 97 / 160 classes) is usually
    distributed this way, often as 84x84 jpgs;
(b) ``root/<class>/<image>`` plus ``split_file``: JSON ``{"train": [class, ...], "val": [...],
    "test": [...]}`` or CSV with the header ``class,split``. Class folders it does not name
    are left out (logged).

Images are the files with an extension in :data:`IMG_EXTENSIONS` (torchvision's list, any
case) under a class folder, recursively, sorted by relative path; names starting with "."
(macOS ``._x.jpg`` files, ``.ipynb_checkpoints``) are ignored. Each is decoded with PIL,
converted to RGB (``channels=3``) or L (``channels=1``), resized to ``image_size`` with
BILINEAR unless it already has that size, and stored uint8 ``[n, C, H, W]``. Classes are in
sorted order. A class folder with no images is an error; one with fewer than ``min_images``
is left out (logged, and listed in the manifest's ``dropped_classes``).

The source identity is the sha256 over ``split/class/relative path:sha256`` of every image
packed: a first pass hashes every file (cheap next to decoding), so bad input is reported
before anything is written.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from distmeta.data.classes import ClassRecord, pack_splits, shared_class
from distmeta.data.manifest import Manifest, SourceIdentity, file_sha256
from distmeta.data.writer import ShardLayout
from distmeta.errors import DataError, NotFound

logger = logging.getLogger(__name__)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")
TIERED_CLASSES = {"train": 351, "val": 97, "test": 160}
Groups = dict[str, dict[str, list[Path]]]
"""split -> class name -> image files, in packing order."""


def size_pair(image_size: int | Sequence[int], channels: int) -> tuple[int, int]:
    """``(H, W)`` from ``image_size`` (int or pair); checks both arguments."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or min(size) < 1 or channels not in (1, 3):
        raise DataError(f"image_size={image_size}, channels={channels}: need a positive size "
                         "(int or [H, W]) and channels 1 or 3")
    return int(size[0]), int(size[1])


def decode_image(path: Path | BinaryIO, size: tuple[int, int], channels: int, where: str | None = None) -> np.ndarray:
    """uint8 ``[C, H, W]``: ``path`` (a file, or encoded bytes in a file object, which errors
    call ``where``) decoded, converted, resized (BILINEAR) if needed."""
    try:
        with Image.open(path) as opened:
            img = opened.convert("RGB" if channels == 3 else "L")
        if img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), Image.BILINEAR)
        array = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
        raise DataError(f"image {where or path}: cannot be decoded ({exc})") from exc
    return array.reshape(size[0], size[1], channels).transpose(2, 0, 1)


def class_records(classes: Mapping[str, Sequence[Path]], size: tuple[int, int], channels: int,
                  meta: Mapping[str, dict[str, Any]] | None = None) -> Iterator[ClassRecord]:
    """One :class:`ClassRecord` per class, decoded when it is reached (one class in memory)."""
    for name, paths in classes.items():
        images = np.empty((len(paths), channels, *size), np.uint8)
        for i, path in enumerate(paths):
            images[i] = decode_image(path, size, channels)
        yield ClassRecord(images, name, dict((meta or {}).get(name, {})))


def content_identity(name: str, root: Path, groups: Groups, detail: dict[str, Any]) -> SourceIdentity:
    """sha256 over ``split/class/relative path:sha256`` of every image, in packing order."""
    digest = hashlib.sha256()
    for split, classes in groups.items():
        for cls, paths in classes.items():
            for path in paths:
                rel = Path(os.path.relpath(path, root)).as_posix()
                digest.update(f"{split}/{cls}/{rel}:{file_sha256(path)}\n".encode())
    counts = {s: {"classes": len(c), "images": sum(map(len, c.values()))} for s, c in groups.items()}
    return SourceIdentity(name, digest.hexdigest(), {"root": str(root), "splits": counts, **detail})


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, no dot names), sorted by relative path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath, f) for f in filenames
                  if not f.startswith(".") and f.lower().endswith(IMG_EXTENSIONS)]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def class_dirs(folder: Path) -> list[str]:
    """Sorted names of the sub-folders of ``folder`` (no dot names)."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _split_folders(root: Path) -> dict[str, dict[str, Path]]:
    if not (root / "train").is_dir():
        found = [s for s in SPLITS if (root / s).is_dir()]
        raise NotFound(
            f"expected train/ val/ test/ class folders under {root}, or a class-folder tree plus "
            "--split-file (split_file=)" + (f"; found {found} but no train/" if found else ""))
    dirs = {}
    for split in (s for s in SPLITS if (root / s).is_dir()):
        names = class_dirs(root / split)
        if not names and split == "train":
            raise NotFound(f"image folder {root / split}: no class folders in it")
        if not names:
            logger.warning("%s: no class folders; split %r is not packed", root / split, split)
            continue
        dirs[split] = {name: root / split / name for name in names}
    return dirs


def _check_names(named: dict[str, list[str]], where: Path) -> None:
    clash = shared_class(named)
    if clash:
        raise DataError(f"split file {where}: class {clash[0]!r} is listed in split {clash[1]!r} and in "
                         f"split {clash[2]!r}; the splits must be disjoint")


def _read_csv_split(path: Path) -> dict[str, list[str]]:
    named: dict[str, list[str]] = {s: [] for s in SPLITS}
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        header = [h.strip() for h in next(rows, [])]
        if header != ["class", "split"]:
            raise DataError(f"split file {path}: header {header}, expected ['class', 'split']")
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) != 2 or row[1].strip() not in SPLITS:
                raise DataError(f"split file {path} line {line}: {row}, expected 'class,split' "
                                 f"with split one of {list(SPLITS)}")
            named[row[1].strip()].append(row[0].strip())
    return named


def read_split_file(path: str | Path) -> dict[str, list[str]]:
    """``{split: [class names]}`` from a JSON or CSV split file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"split file {path}: not found")
    if path.suffix.lower() == ".csv":
        named = _read_csv_split(path)
    else:
        try:
            named = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DataError(f"split file {path}: not valid JSON ({exc}); use .csv for a CSV file") from exc
        bad = not isinstance(named, dict) or set(named) - set(SPLITS) or not all(
            isinstance(v, list) and all(isinstance(c, str) for c in v) for v in named.values())
        if bad:
            raise DataError(f"split file {path}: expected {{\"train\": [class names], \"val\": [...], "
                             f"\"test\": [...]}}, got {str(named)[:200]}")
    named = {s: named[s] for s in SPLITS if named.get(s)}
    if not named:
        raise DataError(f"split file {path}: names no classes")
    _check_names(named, path)
    return named


def _split_file_classes(root: Path, split_file: Path) -> dict[str, dict[str, Path]]:
    named = read_split_file(split_file)
    present = set(class_dirs(root))
    missing = [f"{c!r} ({s})" for s, names in named.items() for c in names if c not in present]
    if missing:
        raise NotFound(f"split file {split_file}: {len(missing)} class(es) have no folder "
                                f"under {root}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    unused = present - {c for names in named.values() for c in names}
    if unused:
        logger.info("%s: %d class folder(s) not named in %s are left out", root, len(unused), split_file)
    return {s: {c: root / c for c in sorted(names)} for s, names in named.items()}


def gather_images(dirs: dict[str, dict[str, Path]], min_images: int) -> tuple[Groups, list[str]]:
    """List each class folder's images; drop classes with fewer than ``min_images``."""
    groups: Groups = {}
    dropped: list[str] = []
    for split, classes in dirs.items():
        groups[split] = {}
        for name, folder in classes.items():
            paths = list_images(folder)
            if not paths:
                raise DataError(f"class folder {folder}: no images (files ending in "
                                 f"{', '.join(IMG_EXTENSIONS)})")
            if len(paths) < min_images:
                dropped.append(name)
                continue
            groups[split][name] = paths
        if not groups[split]:
            raise DataError(f"split {split!r}: every class has fewer than min_images={min_images} images")
    if dropped:
        logger.warning("%d class(es) with fewer than min_images=%d images are left out: %s",
                       len(dropped), min_images, dropped[:10])
    return groups, dropped


def plan_image_folder(root: str | Path, split_file: str | Path | None = None,
                      min_images: int = 1) -> tuple[Groups, list[str]]:
    """Which images of ``root`` each split's classes get, and the classes left out."""
    root = Path(root)
    if min_images < 1:
        raise DataError(f"min_images={min_images}: must be >= 1")
    if not root.is_dir():
        raise NotFound(f"image folder {root}: not a directory")
    dirs = _split_folders(root) if split_file is None else _split_file_classes(root, Path(split_file))
    return gather_images(dirs, min_images)


def _pack_groups(root: Path, out_dir: str, groups: Groups, dropped: list[str], *,
                 size: tuple[int, int], channels: int, dataset: str, detail: dict[str, Any],
                 layout: ShardLayout | None, progress: bool) -> Manifest:
    params = {"image_size": list(size), "channels": channels, "resize": "PIL BILINEAR",
              "dropped_classes": dropped, **detail}
    logger.info("%s: hashing %d images", root, sum(len(p) for c in groups.values() for p in c.values()))
    source = content_identity(dataset, root, groups, detail)
    splits = {s: class_records(classes, size, channels) for s, classes in groups.items()}
    return pack_splits(out_dir, splits, dataset=dataset, params=params, source=source,
                       layout=layout, progress=progress)


def pack_image_folder(root: str | Path, out_dir: str, *, image_size: int | Sequence[int] = 84,
                      channels: int = 3, split_file: str | Path | None = None, min_images: int = 1,
                      layout: ShardLayout | None = None, progress: bool = False,
                      dataset: str = "image-folder") -> Manifest:
    """Pack an image folder (layout (a) or, with ``split_file``, (b)) as class shards."""
    size = size_pair(image_size, channels)
    groups, dropped = plan_image_folder(root, split_file, min_images)
    detail = {"layout": "split-folders" if split_file is None else "split-file", "min_images": min_images}
    return _pack_groups(Path(root), out_dir, groups, dropped, size=size, channels=channels,
                        dataset=dataset, detail=detail, layout=layout, progress=progress)


def pack_tiered_imagenet(root: str | Path, out_dir: str, image_size: int | Sequence[int] = 84, *,
                         channels: int = 3, min_images: int = 1, layout: ShardLayout | None = None,
                         progress: bool = False) -> Manifest:
    """Pack tiered-ImageNet from ``root/{train,val,test}/<wnid>/*.jpg`` (84x84 jpgs are kept
    as decoded). Class counts other than 351 / 97 / 160 are logged, not refused."""
    root = Path(root)
    size = size_pair(image_size, channels)
    if root.is_dir() and not (root / "train").is_dir() and any(root.glob("*_images_png.pkl")):
        raise NotFound(
            f"tiered-ImageNet {root}: holds the original pickles (*_images_png.pkl), which are not "
            "read; expected train/ val/ test/ folders of class folders of images")
    groups, dropped = plan_image_folder(root, None, min_images)
    for split, expected in TIERED_CLASSES.items():
        got = len(groups.get(split, {}))
        if got != expected:
            logger.warning("tiered-ImageNet %s: split %r has %d classes; the benchmark has %d",
                           root, split, got, expected)
    detail = {"layout": "split-folders", "min_images": min_images}
    return _pack_groups(root, out_dir, groups, dropped, size=size, channels=channels,
                        dataset="tiered-imagenet", detail=detail, layout=layout, progress=progress)

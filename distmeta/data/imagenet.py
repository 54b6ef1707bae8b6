"""mini-ImageNet as class shards: Vinyals et al., "Matching Networks for One Shot Learning"
(NeurIPS 2016), with the split of Ravi & Larochelle, "Optimization as a Model for Few-Shot
Learning" (ICLR 2017): 64 / 16 / 20 ImageNet classes of 600 images each.

Source: the split files ``train.csv``, ``val.csv`` and ``test.csv`` (header ``filename,label``;
a row is, e.g., ``n0153282900000005.jpg,n01532829``) in ``csv_dir`` (default ``root``), and the
images they name in ``root/images/``. The CSV files define the split; the project does not ship
them. Classes are packed in the order of their first row in the CSV (the standard files list
each class's rows together, in wnid order); a class's images in CSV order. Images are decoded
as in :mod:`distmeta.data.image_folder` (RGB, BILINEAR resize only if not already
``image_size``: the usual ``images/`` are 84x84 already).

mini-ImageNet cannot be downloaded here: it is cut from ImageNet (ILSVRC-2012), whose terms
of access apply. See :data:`HOW_TO_GET`.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from distmeta.data.classes import pack_splits, shared_class
from distmeta.data.image_folder import SPLITS, Groups, class_records, content_identity, size_pair
from distmeta.data.manifest import Manifest, file_sha256
from distmeta.data.writer import ShardLayout
from distmeta.errors import DataError, NotFound

logger = logging.getLogger(__name__)
MINI_CLASSES = {"train": 64, "val": 16, "test": 20}
HOW_TO_GET = (
    "mini-ImageNet is derived from ImageNet (ILSVRC-2012) and cannot be downloaded by distmeta: "
    "get Ravi & Larochelle's train.csv / val.csv / test.csv (github.com/twitter/meta-learning-lstm, "
    "data/miniImagenet) and make the 84x84 images from an ImageNet copy you have access to, or use "
    "a mini-ImageNet archive with an images/ folder and the three CSV files")


def locate_mini_imagenet(root: str | Path, csv_dir: str | Path | None = None) -> tuple[Path, dict[str, Path]]:
    """``(images folder, {split: CSV file})``, or FileNotFoundError saying what is expected where."""
    root = Path(root)
    csv_root = root if csv_dir is None else Path(csv_dir)
    if not root.is_dir():
        raise NotFound(f"mini-ImageNet {root}: not a directory; expected {root}/images/ and "
                                f"train.csv, val.csv, test.csv in {csv_root}. {HOW_TO_GET}")
    images = root / "images"
    if not images.is_dir():
        raise NotFound(f"mini-ImageNet {images}: folder not found (every image the CSV "
                                f"files name must be in it). {HOW_TO_GET}")
    csvs = {split: csv_root / f"{split}.csv" for split in SPLITS}
    missing = [str(p) for p in csvs.values() if not p.is_file()]
    if missing:
        raise NotFound(f"mini-ImageNet split file(s) not found: {', '.join(missing)} "
                                f"(pass csv_dir= / --csv-dir if they are elsewhere). {HOW_TO_GET}")
    return images, csvs


def read_split_csv(path: Path) -> dict[str, list[str]]:
    """``{label: [filename, ...]}`` of a Ravi & Larochelle CSV, labels in first-row order."""
    by_label: dict[str, list[str]] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = csv.reader(f)
        header = [h.strip() for h in next(rows, [])]
        if header != ["filename", "label"]:
            raise DataError(f"mini-ImageNet split file {path}: header {header}, expected "
                             "['filename', 'label']")
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise DataError(f"mini-ImageNet split file {path} line {line}: {row}, expected "
                                 "'filename,label'")
            by_label.setdefault(row[1].strip(), []).append(row[0].strip())
    if not by_label:
        raise DataError(f"mini-ImageNet split file {path}: no rows")
    return by_label


def _check_disjoint(labels: dict[str, dict[str, list[str]]], csvs: dict[str, Path]) -> None:
    clash = shared_class(labels)
    if clash:
        raise DataError(f"mini-ImageNet: class {clash[0]!r} is in {csvs[clash[1]]} and in {csvs[clash[2]]}; "
                         "the splits must be disjoint")


def _resolve(images: Path, csv_path: Path, by_label: dict[str, list[str]],
             present: set[str]) -> dict[str, list[Path]]:
    missing = [name for names in by_label.values() for name in names if name not in present]
    if missing:
        raise NotFound(f"mini-ImageNet split file {csv_path}: {len(missing)} image(s) it "
                                f"names are not in {images}, e.g. {', '.join(missing[:3])}")
    return {label: [images / name for name in names] for label, names in by_label.items()}


def pack_mini_imagenet(root: str | Path, out_dir: str, image_size: int | Sequence[int] = 84,
                       csv_dir: str | Path | None = None, layout: ShardLayout | None = None,
                       progress: bool = False, *, channels: int = 3) -> Manifest:
    """Pack mini-ImageNet (see the module docstring) as class shards, dataset "mini-imagenet"."""
    size = size_pair(image_size, channels)
    images, csvs = locate_mini_imagenet(root, csv_dir)
    labels = {split: read_split_csv(path) for split, path in csvs.items()}
    _check_disjoint(labels, csvs)
    present = set(os.listdir(images))
    groups: Groups = {s: _resolve(images, csvs[s], labels[s], present) for s in SPLITS}
    for split, expected in MINI_CLASSES.items():
        if len(groups[split]) != expected:
            logger.warning("mini-ImageNet %s: split %r has %d classes; the benchmark has %d",
                           csvs[split], split, len(groups[split]), expected)
    csv_sha = {s: file_sha256(p) for s, p in csvs.items()}
    detail = {"csv_sha256": csv_sha, "class_order": "first CSV row"}
    logger.info("%s: hashing %d images", images, sum(len(p) for c in groups.values() for p in c.values()))
    source = content_identity("mini-imagenet", Path(root), groups, detail)
    params = {"image_size": list(size), "channels": channels, "resize": "PIL BILINEAR",
              "split": "ravi-larochelle-2017", "class_order": "first CSV row"}
    splits = {s: class_records(classes, size, channels) for s, classes in groups.items()}
    return pack_splits(out_dir, splits, dataset="mini-imagenet", params=params, source=source,
                       layout=layout, progress=progress)

"""Class records: the unit of image data sets (one record per class, all of its images).

A class shard is a webdataset tar whose samples are classes: ``<key>.images.npy`` (uint8
``[n, C, H, W]``, every image of the class; ``n`` varies between classes) and
``<key>.meta.json`` (``family: "images"``, ``split``, ``class_id`` (the class's index in the
split), ``name`` (the source's class name) and the data set). Episodes are not stored: they
are sampled from the whole class pool of a split at every step (see
:mod:`distmeta.tasks.images`), so training sees fresh tasks, as in the MAML protocol.

Packers stream classes into :func:`write_classes`: one class is held in memory at a time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distmeta.data.episode import npy_bytes, npy_header
from distmeta.data.errors import ShardError
from distmeta.data.manifest import CLASS_FAMILY, Manifest, ShardRow, SourceIdentity
from distmeta.data.writer import ShardLayout, SplitSpec, publish, write_records
from distmeta.errors import DataError

logger = logging.getLogger(__name__)
CLASS_MEMBERS = ("images.npy", "meta.json")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ClassRecord:
    """All images of one class, uint8 ``[n, C, H, W]``, and its name."""

    images: np.ndarray
    name: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or len(self.images) < 1:
            raise DataError(f"class {self.name!r}: images must be uint8 [n >= 1, C, H, W], got "
                             f"{self.images.dtype} {self.images.shape}")


def encode_class(record: ClassRecord, key: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The webdataset sample of one class (no pickle)."""
    return {"__key__": key, "images.npy": npy_bytes(record.images),
            "meta.json": json.dumps(meta, sort_keys=True).encode("utf-8")}


class ClassCheck:
    """Checks a class record's members against the split's image shape while it is indexed;
    returns what reading needs (image count, where the pixels start) and the parsed meta."""

    def __init__(self, shapes: dict[str, dict[str, Any]]) -> None:
        spec = shapes.get("images")
        if spec is None:
            raise DataError(f"class shards need an 'images' shape in the manifest, got {sorted(shapes)}")
        self.image_shape = tuple(spec["shape"][1:])
        self.image_bytes = int(np.prod(self.image_shape))

    def images(self, data: bytes, path: str, member: str) -> tuple[int, int]:
        """``(count, header length)`` of an ``images.npy`` member, checked."""
        shape, dtype = npy_header(data, path, member)
        if dtype != np.uint8 or len(shape) != 4 or tuple(shape[1:]) != self.image_shape or shape[0] < 1:
            raise ShardError(path, f"member {member} has shape {shape} dtype {dtype.str}, expected "
                                   f"uint8 [n >= 1, {', '.join(map(str, self.image_shape))}]")
        header = len(data) - shape[0] * self.image_bytes
        if header <= 0:
            raise ShardError(path, f"member {member} is shorter than its header says")
        return int(shape[0]), header

    @staticmethod
    def meta(data: bytes, path: str, member: str) -> dict[str, Any]:
        try:
            meta = json.loads(data)
        except ValueError as exc:
            raise ShardError(path, f"member {member} is not valid JSON ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("family") != CLASS_FAMILY or "name" not in meta:
            raise ShardError(path, f"member {member} is not a class record's meta (family "
                                   f"{CLASS_FAMILY!r} with a name): {str(meta)[:200]}")
        return meta


def shared_class(named: Mapping[str, Iterable[str]]) -> tuple[str, str, str] | None:
    """``(class, first split, second split)`` of the first class named in two splits, or ``None``."""
    seen: dict[str, str] = {}
    for split, names in named.items():
        for name in names:
            if name in seen:
                return name, seen[name], split
            seen[name] = split
    return None


def write_classes(out_dir: str, split: str, classes: Iterable[ClassRecord], *, dataset: str,
                  params: dict[str, Any], source: SourceIdentity, layout: ShardLayout | None = None,
                  total: int | None = None, progress: bool = False) -> list[ShardRow]:
    """Write ``classes`` as the class shards of ``split``; return their manifest rows.

    ``params`` (image size, channels, rotations ...) go to the manifest with ``dataset``.
    ``layout.maxcount`` counts classes per file; ``maxsize`` bounds a file's bytes.
    """
    layout = layout or ShardLayout(maxcount=16, maxsize=256e6)
    spec = SplitSpec(split, CLASS_FAMILY, {"dataset": dataset, **params}, "cross_entropy", 0, source)
    shape: list[tuple[int, ...]] = []

    def samples() -> Iterable[tuple[dict[str, Any], dict[str, Any], int]]:
        for index, record in enumerate(classes):
            if not shape:
                shape.append(record.images.shape[1:])
            elif record.images.shape[1:] != shape[0]:
                raise DataError(f"split {split!r} class {record.name!r}: images {record.images.shape[1:]} "
                                 f"differ from the split's {shape[0]}")
            meta = {**record.meta, "family": CLASS_FAMILY, "dataset": dataset, "split": split,
                    "class_id": index, "name": record.name, "images": len(record.images)}
            yield encode_class(record, f"{index:08d}", meta), \
                {"images": {"shape": [-1, *record.images.shape[1:]], "dtype": "|u1"}}, len(record.images)

    return write_records(out_dir, spec, samples(), total=total, layout=layout, progress=progress,
                         what=f"packing {split} classes")


def pack_splits(out_dir: str, splits: dict[str, Iterable[ClassRecord]], **kwargs: Any) -> Manifest:
    """Write each split's classes, check that no class name is in two splits, publish.

    Nothing is published (the manifest is untouched) when a class is in two splits."""
    rows: list[ShardRow] = []
    seen: dict[str, str] = {}

    def named(split: str, classes: Iterable[ClassRecord]) -> Iterable[ClassRecord]:
        for record in classes:
            if record.name in seen:
                raise DataError(f"class {record.name!r} is in split {seen[record.name]!r} and in "
                                 f"split {split!r}; the splits must be disjoint")
            seen[record.name] = split
            yield record

    for split, classes in splits.items():
        rows += write_classes(out_dir, split, named(split, classes), **kwargs)
    return publish(out_dir, rows)

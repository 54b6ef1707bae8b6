"""Meta-Dataset (Triantafillou et al. 2020) from the official conversion's records, packed as
class shards: ``distmeta data pack meta-dataset --root MD_RECORDS --source NAME|all``.

The official conversion (``meta_dataset/dataset_conversion``) writes, per source, one TFRecord
file per class (``{class_id}.tfrecords``: ``tf.train.Example``s with the encoded image under
``image`` and the class id under ``label``) and a ``dataset_spec.json`` (read by
:mod:`distmeta.data.md_spec`). They are read here without TensorFlow: the framing (length,
masked CRC-32C of the length, data, masked CRC-32C of the data) is checked record by record,
the ``Example`` parsed with the ``tfrecord`` package's protobuf, the image decoded with PIL,
converted to RGB (every source, so that sources mix in one run) and resized to
``image_size`` (BILINEAR, as the official pipeline's ``tf.image.resize``).

Each class becomes one class record with the spec's official split (TRAIN/VALID/TEST ->
train/val/test) and its place in the hierarchy (``superclass``: Omniglot's alphabet;
``ancestors``: ILSVRC's WordNet nodes above it), which the episode sampler reads.
"""

from __future__ import annotations

import hashlib
import io
import logging
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from distmeta.data.classes import ClassRecord, pack_splits
from distmeta.data.errors import ShardError
from distmeta.data.image_folder import decode_image, size_pair
from distmeta.data.manifest import Manifest, SourceIdentity
from distmeta.data.md_spec import SPEC_NAME, SourceSpec, SpecClass, read_spec
from distmeta.data.writer import ShardLayout
from distmeta.errors import DataError, NotFound

logger = logging.getLogger(__name__)
SOURCES = ("ilsvrc_2012", "omniglot", "aircraft", "cu_birds", "dtd", "quickdraw", "fungi", "vgg_flower",
           "traffic_sign", "mscoco")
"""The ten sources of the paper, by the names the official conversion gives their folders."""


def _masked_crc(data: bytes) -> int:
    from tfrecord.writer import TFRecordWriter

    return struct.unpack("<I", TFRecordWriter.masked_crc(data))[0]


def _frames(f: BinaryIO, path: Path) -> Iterator[bytes]:
    """The records of a TFRecord file, each frame's two CRCs checked."""
    index = 0
    while head := f.read(12):
        if len(head) < 12:
            raise ShardError(str(path), f"record {index}: truncated header ({len(head)} of 12 bytes)")
        length_bytes, (length_crc,) = head[:8], struct.unpack("<I", head[8:])
        if _masked_crc(length_bytes) != length_crc:
            raise ShardError(str(path), f"record {index}: the length's CRC does not match (not a TFRecord file?)")
        (length,) = struct.unpack("<Q", length_bytes)
        data, tail = f.read(length), f.read(4)
        if len(data) < length or len(tail) < 4:
            raise ShardError(str(path), f"record {index}: truncated ({len(data)} of {length} bytes)")
        if _masked_crc(data) != struct.unpack("<I", tail)[0]:
            raise ShardError(str(path), f"record {index}: the data's CRC does not match (corrupt)")
        yield data
        index += 1


def read_examples(path: str | Path, image_key: str = "image", label_key: str = "label") -> Iterator[tuple[bytes, int]]:
    """``(encoded image, label)`` of every ``tf.train.Example`` in a record file."""
    from google.protobuf.message import DecodeError
    from tfrecord import example_pb2

    path = Path(path)
    with open(path, "rb") as f:
        for i, data in enumerate(_frames(f, path)):
            example = example_pb2.Example()
            try:
                example.ParseFromString(data)
            except DecodeError as exc:
                raise ShardError(str(path), f"record {i}: not a tf.train.Example ({exc})") from None
            feature = example.features.feature
            if image_key not in feature or label_key not in feature:
                raise ShardError(str(path), f"record {i}: features {sorted(feature)}; expected "
                                            f"{image_key!r} and {label_key!r}")
            images, labels = feature[image_key].bytes_list.value, feature[label_key].int64_list.value
            if len(images) != 1 or len(labels) != 1:
                raise ShardError(str(path), f"record {i}: expected one image and one label, got "
                                            f"{len(images)} and {len(labels)}")
            yield images[0], int(labels[0])


def read_class(spec: SourceSpec, root: Path, c: SpecClass, size: tuple[int, int]) -> ClassRecord:
    """Every image of class ``c``, decoded, RGB, resized; checked against the spec (that the
    file is there is checked for every class before packing starts: :func:`pack_md_source`)."""
    path = spec.record_file(root, c)
    images = []
    for i, (data, label) in enumerate(read_examples(path)):
        if label != c.class_id:
            raise ShardError(str(path), f"record {i}: label {label}, expected the class id {c.class_id}")
        images.append(decode_image(io.BytesIO(data), size, 3, where=f"{path} record {i}"))
    if len(images) != c.images:
        raise ShardError(str(path), f"{len(images)} images; {spec.path} says class {c.class_id} has {c.images}")
    return ClassRecord(np.stack(images), c.name, c.meta(spec.name))


def _identity(spec: SourceSpec, root: Path) -> SourceIdentity:
    """sha256 over the spec and every record file's size (the records are checked by CRC)."""
    digest = hashlib.sha256((root / SPEC_NAME).read_bytes())
    for classes in spec.splits.values():
        for c in classes:
            path = spec.record_file(root, c)
            digest.update(f"{path.name}:{path.stat().st_size if path.is_file() else -1}\n".encode())
    return SourceIdentity(f"meta-dataset/{spec.name}", digest.hexdigest(),
                          {"root": str(root), "spec": spec.kind, "hierarchy": spec.hierarchy})


def pack_md_source(root: str | Path, out_dir: str, *, image_size: int = 84, layout: ShardLayout | None = None,
                   progress: bool = False) -> Manifest:
    """Pack one source (its records and ``dataset_spec.json`` under ``root``) as class shards."""
    root = Path(root)
    spec, size = read_spec(root), size_pair(image_size, 3)
    for split, classes in spec.splits.items():
        missing = [c for c in classes if not spec.record_file(root, c).is_file()]
        if missing:
            raise NotFound(f"{spec.record_file(root, missing[0])}: the record file of class {missing[0].class_id} "
                           f"({missing[0].name!r}, split {split}), which {spec.path} names, is missing "
                           f"({len(missing)} missing in all)")
    params = {"image_size": list(size), "channels": 3, "source": spec.name, "hierarchy": spec.hierarchy}
    # Traffic Signs and MSCOCO are test-only sources: their empty splits are not written
    splits = {s: (read_class(spec, root, c, size) for c in classes) for s, classes in spec.splits.items() if classes}
    if not splits:
        raise DataError(f"{spec.path}: no split has any class")
    logger.info("packing Meta-Dataset source %s (%s) from %s", spec.name, spec.kind, root)
    return pack_splits(out_dir, splits, dataset=f"meta-dataset/{spec.name}", params=params,
                       source=_identity(spec, root), layout=layout, progress=progress)


def find_sources(root: str | Path, source: str) -> dict[str, Path]:
    """``{name: folder}``: ``source`` under ``root`` (or ``root`` itself, holding a spec), or with
    ``all`` every folder under ``root`` that holds a ``dataset_spec.json``."""
    root = Path(root)
    if source != "all":
        folder = root if (root / SPEC_NAME).is_file() and not (root / source).is_dir() else root / source
        if not (folder / SPEC_NAME).is_file():
            raise NotFound(f"{folder / SPEC_NAME}: no Meta-Dataset source {source!r} under {root}")
        return {source: folder}
    found = {p.parent.name: p.parent for p in sorted(root.glob(f"*/{SPEC_NAME}"))}
    if not found:
        raise NotFound(f"{root}: no */{SPEC_NAME}; expected the official conversion's folders "
                       f"(e.g. {', '.join(SOURCES[:3])})")
    return found


def pack_meta_dataset(root: str | Path, out_dir: str, source: str = "all", *, image_size: int = 84,
                      layout: ShardLayout | None = None, progress: bool = False) -> dict[str, Any]:
    """Pack ``source`` (or ``all`` found under ``root``): one source to ``out_dir``; ``all`` to
    ``out_dir/<name>`` each. Returns ``{name: data set directory}``, what ``data.sources`` lists."""
    if image_size not in (84, 126):
        logger.warning("image_size=%d: the paper's backbones take 84 or 126 px", image_size)
    found = find_sources(root, source)
    out = {}
    for name, folder in found.items():
        target = out_dir if source != "all" else f"{out_dir.rstrip('/')}/{name}"
        pack_md_source(folder, target, image_size=image_size, layout=layout, progress=progress)
        out[name] = target
    if not out:
        raise DataError(f"{root}: nothing packed")
    return out

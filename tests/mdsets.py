"""Meta-Dataset sources in the official conversion's format, for tests: one TFRecord file per
class (``tf.train.Example`` with the JPEG/PNG-encoded image under ``image`` and the class id
under ``label``, written with the ``tfrecord`` package's writer, CRCs included) and the
source's ``dataset_spec.json`` in each of the three spec kinds."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from tfrecord.writer import TFRecordWriter

SPLITS = ("TRAIN", "VALID", "TEST")


def encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def write_class(folder: Path, class_id: int, n: int, size: int, rng: np.random.Generator, grey: bool = False) -> None:
    writer = TFRecordWriter(str(folder / f"{class_id}.tfrecords"))
    for _ in range(n):
        shape = (size, size) if grey else (size, size, 3)
        writer.write({"image": (encode(rng.integers(0, 256, shape, dtype=np.uint8), "JPEG" if not grey else "PNG"),
                                "byte"), "label": (class_id, "int")})
    writer.close()


def _counts(n: int, images: int | tuple[int, int], rng: np.random.Generator) -> list[int]:
    if isinstance(images, int):
        return [images] * n
    return [int(c) for c in rng.integers(images[0], images[1] + 1, n)]


def flat_source(root: Path, name: str, per_split: tuple[int, int, int], images: int | tuple[int, int] = 12,
                size: int = 16, seed: int = 0) -> Path:
    """A ``DatasetSpecification`` source (Aircraft, CUB, ...): classes numbered by split."""
    folder, rng = root / name, np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    counts = _counts(sum(per_split), images, rng)
    for c, n in enumerate(counts):
        write_class(folder, c, n, size, rng)
    spec = {"name": name, "classes_per_split": dict(zip(SPLITS, per_split, strict=True)),
            "images_per_class": {str(c): n for c, n in enumerate(counts)},
            "class_names": {str(c): f"{name}-class{c:03d}" for c in range(len(counts))},
            "path": str(folder), "file_pattern": "{}.tfrecords", "__class__": "DatasetSpecification"}
    (folder / "dataset_spec.json").write_text(json.dumps(spec))
    return folder


def bilevel_source(root: Path, name: str, alphabets: tuple[list[int], list[int], list[int]], images: int = 20,
                   size: int = 16, seed: int = 1) -> Path:
    """A ``BiLevelDatasetSpecification`` source (Omniglot): per split, classes per alphabet."""
    folder, rng = root / name, np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    per_super = [n for split in alphabets for n in split]
    total = sum(per_super)
    for c in range(total):
        write_class(folder, c, images, size, rng, grey=True)
    spec = {"name": name, "superclasses_per_split": {k: len(v) for k, v in zip(SPLITS, alphabets, strict=True)},
            "classes_per_superclass": {str(s): n for s, n in enumerate(per_super)},
            "images_per_class": {str(c): images for c in range(total)},
            "superclass_names": {str(s): f"alphabet{s:02d}" for s in range(len(per_super))},
            "class_names": {str(c): f"char{c:04d}" for c in range(total)},
            "path": str(folder), "file_pattern": "{}.tfrecords", "__class__": "BiLevelDatasetSpecification"}
    (folder / "dataset_spec.json").write_text(json.dumps(spec))
    return folder


def _tree(prefix: str, groups: list[int], start: int) -> tuple[list[dict], list[str]]:
    """A root over ``len(groups)`` internal nodes, node g over ``groups[g]`` leaves; the last
    two groups also share a second parent (a DAG, not a tree)."""
    def node(wn_id: str, parents: list[str]) -> dict:
        return {"wn_id": wn_id, "words": wn_id, "children_ids": [], "parents_ids": parents}

    root = f"{prefix}root"
    nodes = {root: node(root, [])}
    leaves: list[str] = []
    for g, n in enumerate(groups):
        inner = f"{prefix}g{g}"
        nodes[inner] = node(inner, [root])
        nodes[root]["children_ids"].append(inner)
        for _ in range(n):
            leaf = f"n{start + len(leaves):08d}"
            nodes[leaf] = node(leaf, [inner])
            nodes[inner]["children_ids"].append(leaf)
            leaves.append(leaf)
    if len(groups) >= 2:
        shared = f"{prefix}shared"
        nodes[shared] = node(shared, [root])
        nodes[root]["children_ids"].append(shared)
        for g in (len(groups) - 2, len(groups) - 1):
            nodes[shared]["children_ids"].append(f"{prefix}g{g}")
            nodes[f"{prefix}g{g}"]["parents_ids"].append(shared)
    return list(nodes.values()), leaves


def dag_source(root: Path, name: str, groups: tuple[list[int], list[int], list[int]], images: int = 12,
               size: int = 16, seed: int = 2) -> Path:
    """A ``HierarchicalDatasetSpecification`` source (ILSVRC-2012): a WordNet-like DAG per split."""
    folder, rng = root / name, np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    graphs, counts, names = {}, {}, {}
    for key, split_groups in zip(SPLITS, groups, strict=True):
        nodes, leaves = _tree(key.lower(), split_groups, len(names))
        graphs[key] = nodes
        counts[key] = {leaf: images for leaf in leaves}
        for leaf in leaves:
            names[str(len(names))] = leaf
    for c in range(len(names)):
        write_class(folder, c, images, size, rng)
    spec = {"name": name, "split_subgraphs": graphs, "images_per_class": counts, "class_names": names,
            "path": str(folder), "file_pattern": "{}.tfrecords", "__class__": "HierarchicalDatasetSpecification"}
    (folder / "dataset_spec.json").write_text(json.dumps(spec))
    return folder

"""Meta-Dataset's ``dataset_spec.json`` (Triantafillou et al. 2020, the official conversion):
which classes each split holds, their names and image counts, and the class hierarchies the
episode sampler uses.

Three kinds of spec, told apart by their ``__class__``:

* ``DatasetSpecification``: ``classes_per_split`` ``{TRAIN, VALID, TEST}``; class ids are
  consecutive, TRAIN's first, then VALID's, then TEST's (as ``dataset_spec.get_classes``);
* ``BiLevelDatasetSpecification`` (Omniglot's alphabets): ``superclasses_per_split``,
  ``classes_per_superclass`` and ``superclass_names``; superclasses are consecutive by split
  and their classes consecutive by superclass, so every class has its alphabet;
* ``HierarchicalDatasetSpecification`` (ILSVRC-2012's WordNet DAG): ``split_subgraphs`` per
  split (nodes ``wn_id``, ``children_ids``, ``parents_ids``); the split's classes are its
  subgraph's leaves, ``class_names`` maps ids to ``wn_id``s and ``images_per_class`` is per
  split by ``wn_id``. Each class carries the internal nodes above it (``ancestors``): the
  sampler's "spanning leaves" of a node are the classes that list it.

Every problem is a :class:`DataError` naming the spec file and the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distmeta.errors import DataError, NotFound

SPEC_NAME = "dataset_spec.json"
SPLIT_KEYS = {"TRAIN": "train", "VALID": "val", "TEST": "test"}
KINDS = ("DatasetSpecification", "BiLevelDatasetSpecification", "HierarchicalDatasetSpecification")


@dataclass(frozen=True)
class SpecClass:
    """One class: its id in the source, name, image count and place in the hierarchy."""

    class_id: int
    name: str
    images: int
    superclass: str | None = None
    ancestors: tuple[str, ...] = ()

    def meta(self, source: str) -> dict[str, Any]:
        """What a packed class record keeps (its ``meta.json``)."""
        out: dict[str, Any] = {"source": source, "md_class_id": self.class_id}
        if self.superclass is not None:
            out["superclass"] = self.superclass
        if self.ancestors:
            out["ancestors"] = list(self.ancestors)
        return out


@dataclass(frozen=True)
class SourceSpec:
    """A source's spec: per split (``train``/``val``/``test``) its classes in id order."""

    name: str
    kind: str
    file_pattern: str
    splits: dict[str, list[SpecClass]] = field(default_factory=dict)
    path: str = ""

    @property
    def hierarchy(self) -> str:
        return {"BiLevelDatasetSpecification": "bilevel",
                "HierarchicalDatasetSpecification": "dag"}.get(self.kind, "none")

    def record_file(self, root: Path, c: SpecClass) -> Path:
        """The class's record file (``file_pattern`` with the class id)."""
        return root / self.file_pattern.format(c.class_id)


def _get(spec: dict[str, Any], key: str, path: Path) -> Any:
    if key not in spec:
        raise DataError(f"{path}: key {key!r} is missing (a {spec.get('__class__', 'dataset')} spec needs it)")
    return spec[key]


def _per_split(spec: dict[str, Any], key: str, path: Path) -> dict[str, int]:
    counts = _get(spec, key, path)
    missing = [k for k in SPLIT_KEYS if k not in counts]
    if missing:
        raise DataError(f"{path}: {key} lacks {missing}; expected TRAIN, VALID and TEST")
    return {k: int(counts[k]) for k in SPLIT_KEYS}


def _count(spec: dict[str, Any], key: str, i: int | str, path: Path, table: dict[str, Any] | None = None) -> Any:
    table = _get(spec, key, path) if table is None else table
    if str(i) not in table:
        raise DataError(f"{path}: {key} has no entry for class {i!r}, which the spec names")
    return table[str(i)]


def _flat(spec: dict[str, Any], path: Path) -> dict[str, list[SpecClass]]:
    counts, at, out = _per_split(spec, "classes_per_split", path), 0, {}
    for key, split in SPLIT_KEYS.items():
        out[split] = [SpecClass(i, str(_count(spec, "class_names", i, path)),
                                int(_count(spec, "images_per_class", i, path)))
                      for i in range(at, at + counts[key])]
        at += counts[key]
    return out


def _bilevel(spec: dict[str, Any], path: Path) -> dict[str, list[SpecClass]]:
    supers, sc, cid, out = _per_split(spec, "superclasses_per_split", path), 0, 0, {}
    for key, split in SPLIT_KEYS.items():
        classes = []
        for s in range(sc, sc + supers[key]):
            name = str(_count(spec, "superclass_names", s, path))
            for _ in range(int(_count(spec, "classes_per_superclass", s, path))):
                classes.append(SpecClass(cid, str(_count(spec, "class_names", cid, path)),
                                         int(_count(spec, "images_per_class", cid, path)), superclass=name))
                cid += 1
        sc += supers[key]
        out[split] = classes
    return out


def _ancestors(nodes: list[dict[str, Any]], path: Path, key: str) -> dict[str, tuple[str, ...]]:
    """Each leaf's internal ancestors within the split's subgraph."""
    try:
        parents = {n["wn_id"]: list(n.get("parents_ids", [])) for n in nodes}
        leaves = [n["wn_id"] for n in nodes if not n.get("children_ids")]
    except (TypeError, KeyError) as exc:
        raise DataError(f"{path}: split_subgraphs.{key} has a node without wn_id ({exc})") from None
    out = {}
    for leaf in leaves:
        seen: set[str] = set()
        todo = [p for p in parents[leaf] if p in parents]
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo += [p for p in parents[node] if p in parents]
        out[leaf] = tuple(sorted(seen))
    return out


def _dag(spec: dict[str, Any], path: Path) -> dict[str, list[SpecClass]]:
    graphs, counts = _get(spec, "split_subgraphs", path), _get(spec, "images_per_class", path)
    ids = {str(v): int(k) for k, v in _get(spec, "class_names", path).items()}
    out = {}
    for key, split in SPLIT_KEYS.items():
        if key not in graphs or key not in counts:
            raise DataError(f"{path}: split_subgraphs or images_per_class lacks {key}")
        leaves = _ancestors(graphs[key], path, key)
        missing = sorted(set(leaves) - set(ids))
        if missing:
            raise DataError(f"{path}: class_names lacks the leaves {missing[:5]} of split {key}")
        out[split] = sorted((SpecClass(ids[w], w, int(_count(spec, "images_per_class", w, path, counts[key])),
                                       ancestors=a) for w, a in leaves.items()), key=lambda c: c.class_id)
    return out


def read_spec(root: str | Path) -> SourceSpec:
    """The spec of the source whose records are under ``root``."""
    path = Path(root) / SPEC_NAME
    if not path.is_file():
        raise NotFound(f"{path}: no {SPEC_NAME}; a Meta-Dataset source directory holds one per source "
                       "(from the official conversion, meta_dataset.dataset_conversion)")
    try:
        spec = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(spec).__name__}")
    kind = spec.get("__class__", "DatasetSpecification")
    readers = {"DatasetSpecification": _flat, "BiLevelDatasetSpecification": _bilevel,
               "HierarchicalDatasetSpecification": _dag}
    if kind not in readers:
        raise DataError(f"{path}: __class__={kind!r}; expected one of {list(KINDS)}")
    pattern = str(spec.get("file_pattern", "{}.tfrecords"))
    if pattern.count("{}") != 1:
        raise DataError(f"{path}: file_pattern={pattern!r}; expected one '{{}}' for the class id")
    return SourceSpec(str(_get(spec, "name", path)), kind, pattern, readers[kind](spec, path), str(path))

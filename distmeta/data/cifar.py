"""CIFAR-FS and FC100, the few-shot benchmarks cut from CIFAR-100, as class shards.

* CIFAR-FS: Bertinetto et al., "Meta-learning with differentiable closed-form solvers"
  (ICLR 2019): 64 / 16 / 20 CIFAR-100 classes chosen at random.
* FC100: Oreshkin et al., "TADAM: Task dependent adaptive metric for improved few-shot
  learning" (NeurIPS 2018): split by superclass, 12 / 4 / 4 superclasses, i.e. 60 / 20 / 20
  classes, so that meta-test classes are far from the meta-train ones.

Both pool CIFAR-100's train and test images (600 per class: the 500 train images, then the
100 test ones, each in file order), 32x32 RGB, stored as they are (uint8 ``[n, 3, 32, 32]``).

Source: torchvision's CIFAR-100 directory, ``root/cifar-100-python/{train,test,meta}`` (Python
pickles of dicts; keys ``data``, ``fine_labels``, ``coarse_labels``, ``filenames`` and
``fine_label_names``, ``coarse_label_names``; keys may be bytes or str). They are read with a
restricted unpickler that builds only dicts, lists, strings, numbers and numpy arrays and
refuses every other global, so a file never runs code. ``download=True`` fetches and checks
the archive with ``torchvision.datasets.CIFAR100`` first.

The class splits are the torchmeta lists (MIT License, ``splits/LICENSE-torchmeta``), shipped
as package data: ``splits/cifar-fs-*.json`` (``[superclass, class]``, packed in file order)
and ``splits/fc100-*.json`` (superclasses, in file order; each superclass's five classes by
CIFAR-100 label index). Every name, and every CIFAR-FS class's superclass, is checked
against the data.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.resources
import json
import logging
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distmeta.data.classes import ClassRecord, pack_splits
from distmeta.data.manifest import Manifest, SourceIdentity, file_sha256
from distmeta.data.writer import ShardLayout
from distmeta.errors import DataError, NotFound

logger = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
FOLDER = "cifar-100-python"
_NUMPY_CORE = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("builtins", "bytes"), ("builtins", "bytearray"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only; any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # Python 2's name
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}: CIFAR-100 files hold "
                                         "only dicts, lists, strings and numpy arrays")
        if module.startswith(("numpy.core.", "numpy._core.")):
            module = _NUMPY_CORE + module[module.index(".", 6):]
        return getattr(importlib.import_module(module), name)


def load_pickle(path: Path) -> dict[str, Any]:
    """A CIFAR pickle (dict) read with the restricted unpickler; bytes keys become str."""
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError) as exc:
        raise DataError(f"CIFAR-100 file {path}: cannot be read ({exc})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR-100 file {path}: holds a {type(obj).__name__}, expected a dict")
    return {_text(k): v for k, v in obj.items()}


def _text(value: Any) -> Any:
    return value.decode("latin1") if isinstance(value, bytes) else value


def _field(record: dict[str, Any], key: str, path: Path) -> Any:
    if key not in record:
        raise DataError(f"CIFAR-100 file {path}: no key {key!r} (has {sorted(record)})")
    return record[key]


@dataclass(frozen=True)
class Cifar100:
    """CIFAR-100 train then test: images uint8 ``[60000, 3, 32, 32]``, fine and coarse labels."""

    images: np.ndarray
    fine: np.ndarray
    coarse: np.ndarray
    fine_names: list[str]
    coarse_names: list[str]
    folder: Path
    source: SourceIdentity

    def superclass_of(self) -> dict[int, int]:
        """fine label -> coarse label, checked to be one coarse label per fine class."""
        pairs = np.unique(np.stack([self.fine, self.coarse], axis=1), axis=0)
        fine, counts = np.unique(pairs[:, 0], return_counts=True)
        if (counts > 1).any():
            bad = self.fine_names[int(fine[counts > 1][0])]
            raise DataError(f"CIFAR-100 {self.folder}: class {bad!r} has images in several superclasses")
        return {int(f): int(c) for f, c in pairs}


def _read_part(path: Path, names: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    record = load_pickle(path)
    data = _field(record, "data", path)
    fine = np.asarray(_field(record, "fine_labels", path), np.int64)
    coarse = np.asarray(_field(record, "coarse_labels", path), np.int64)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"CIFAR-100 file {path}: 'data' is {getattr(data, 'dtype', type(data))} "
                         f"{getattr(data, 'shape', '')}, expected uint8 [N, 3072]")
    if fine.shape != (len(data),) or coarse.shape != (len(data),):
        raise DataError(f"CIFAR-100 file {path}: {len(fine)} fine and {len(coarse)} coarse labels "
                         f"for {len(data)} images")
    for labels, n, key in ((fine, names[0], "fine_labels"), (coarse, names[1], "coarse_labels")):
        if len(labels) and (labels.min() < 0 or labels.max() >= n):
            raise DataError(f"CIFAR-100 file {path}: {key} outside 0..{n - 1}")
    return data.reshape(-1, 3, 32, 32), fine, coarse


def cifar100_folder(root: str | Path) -> Path:
    """``root/cifar-100-python`` (or ``root`` itself if it is that folder), checked."""
    root = Path(root)
    folder = root if root.name == FOLDER and (root / "meta").is_file() else root / FOLDER
    if not folder.is_dir():
        raise NotFound(f"CIFAR-100 folder {folder}: not found; expected torchvision's "
                                f"layout {FOLDER}/train, test, meta under {root}, or pass "
                                "download=True (--download) to fetch it")
    for name in ("train", "test", "meta"):
        if not (folder / name).is_file():
            raise NotFound(f"CIFAR-100 file {folder / name}: not found (torchvision's "
                                    "layout; download=True / --download fetches it)")
    return folder


def read_cifar100(root: str | Path) -> Cifar100:
    """CIFAR-100's train and test images pooled, with labels and names."""
    folder = cifar100_folder(root)
    meta = load_pickle(folder / "meta")
    fine_names = [str(_text(n)) for n in _field(meta, "fine_label_names", folder / "meta")]
    coarse_names = [str(_text(n)) for n in _field(meta, "coarse_label_names", folder / "meta")]
    parts = [_read_part(folder / p, (len(fine_names), len(coarse_names))) for p in ("train", "test")]
    shas = {name: file_sha256(folder / name) for name in ("train", "test", "meta")}
    combined = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in sorted(shas.items())).encode()).hexdigest()
    return Cifar100(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                    np.concatenate([p[2] for p in parts]), fine_names, coarse_names, folder,
                    SourceIdentity("cifar-100", combined, {"files": shas, "pooled": "train+test"}))


def load_split(benchmark: str, split: str) -> list[Any]:
    """The class list ``splits/<benchmark>-<split>.json`` shipped with distmeta."""
    resource = importlib.resources.files("distmeta.data").joinpath("splits").joinpath(
        f"{benchmark}-{split}.json")
    return json.loads(resource.read_text(encoding="utf-8"))


def _index(names: list[str], name: str, what: str, where: str, data: Cifar100) -> int:
    if name not in names:
        raise DataError(f"{where}: {what} {name!r} is not in {data.folder / 'meta'} "
                         f"({len(names)} {what} names); the data is not standard CIFAR-100")
    return names.index(name)


def _cifar_fs_classes(data: Cifar100, split: str) -> list[tuple[int, str]]:
    where, parent = f"CIFAR-FS split {split!r}", data.superclass_of()
    classes = []
    for superclass, name in load_split("cifar-fs", split):
        fine = _index(data.fine_names, name, "class", where, data)
        coarse = _index(data.coarse_names, superclass, "superclass", where, data)
        if parent.get(fine) != coarse:
            have = data.coarse_names[parent[fine]] if fine in parent else "no images"
            raise DataError(f"{where}: class {name!r} is listed under superclass {superclass!r}, "
                             f"but in {data.folder} its superclass is {have!r}")
        classes.append((fine, superclass))
    return classes


def _fc100_classes(data: Cifar100, split: str) -> list[tuple[int, str]]:
    where, parent = f"FC100 split {split!r}", data.superclass_of()
    classes = []
    for superclass in load_split("fc100", split):
        coarse = _index(data.coarse_names, superclass, "superclass", where, data)
        fines = sorted(f for f, c in parent.items() if c == coarse)
        if not fines:
            raise DataError(f"{where}: superclass {superclass!r} has no images in {data.folder}")
        classes += [(f, superclass) for f in fines]
    return classes


def _records(data: Cifar100, classes: list[tuple[int, str]]) -> Iterator[ClassRecord]:
    for fine, superclass in classes:
        images = data.images[np.flatnonzero(data.fine == fine)]
        yield ClassRecord(images, data.fine_names[fine],
                          {"superclass": superclass, "fine_label": fine})


def _download(root: Path) -> None:
    from torchvision.datasets import CIFAR100

    for train in (True, False):
        CIFAR100(str(root), train=train, download=True)


def _pack(benchmark: str, root: str | Path, out_dir: str, download: bool,
          layout: ShardLayout | None, progress: bool) -> Manifest:
    if download:
        _download(Path(root))
    data = read_cifar100(root)
    pick = _cifar_fs_classes if benchmark == "cifar-fs" else _fc100_classes
    classes = {split: pick(data, split) for split in SPLITS}  # every name checked before writing
    logger.info("%s from %s: %s classes", benchmark, data.folder,
                " / ".join(str(len(c)) for c in classes.values()))
    params = {"image_size": [32, 32], "channels": 3, "split": benchmark,
              "images": "CIFAR-100 train + test pooled"}
    splits = {split: _records(data, c) for split, c in classes.items()}
    return pack_splits(out_dir, splits, dataset=benchmark, params=params, source=data.source,
                       layout=layout, progress=progress)


def pack_cifar_fs(root: str | Path, out_dir: str, download: bool = False, *,
                  layout: ShardLayout | None = None, progress: bool = False) -> Manifest:
    """Pack CIFAR-FS (64 / 16 / 20 classes of 600 images) as class shards, dataset "cifar-fs"."""
    return _pack("cifar-fs", root, out_dir, download, layout, progress)


def pack_fc100(root: str | Path, out_dir: str, download: bool = False, *,
               layout: ShardLayout | None = None, progress: bool = False) -> Manifest:
    """Pack FC100 (12 / 4 / 4 superclasses, 60 / 20 / 20 classes) as class shards, dataset "fc100"."""
    return _pack("fc100", root, out_dir, download, layout, progress)

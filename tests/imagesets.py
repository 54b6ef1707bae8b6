"""Small image data sets in the real on-disk formats of their sources, for tests: image
folders (class folders of PNGs) and torchvision's CIFAR-100 directory (Python pickles)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from distmeta.data.cifar import load_split


def save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def image_folder_tree(root: Path, layout: dict[str, int], per_class: int, size: int = 20,
                      seed: int = 0) -> Path:
    """``root/<split>/<class>/<i>.png``: ``layout`` gives the classes per split; random RGB."""
    rng = np.random.default_rng(seed)
    for split, n in layout.items():
        for c in range(n):
            for i in range(per_class):
                save(root / split / f"{split}{c:02d}" / f"{i}.png",
                     rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return root


def cifar_names() -> tuple[list[str], list[str], dict[str, str]]:
    """CIFAR-100's fine and coarse names (both alphabetical, as in its meta file) and
    fine -> coarse, from the CIFAR-FS lists, which name all 100 classes with superclasses."""
    parent = {c: s for split in ("train", "val", "test") for s, c in load_split("cifar-fs", split)}
    return sorted(parent), sorted(set(parent.values())), parent


def write_cifar100(root: Path, per_class: tuple[int, int] = (3, 1), rename: dict[str, str] | None = None,
                   protocol: int = 2) -> Path:
    """torchvision's ``cifar-100-python/{train,test,meta}`` with ``per_class`` images per class."""
    fine_names, coarse_names, parent = cifar_names()
    rng = np.random.default_rng(4)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for part, n in zip(("train", "test"), per_class, strict=True):
        fine = rng.permutation(np.repeat(np.arange(100), n)).tolist()
        record = {"filenames": [f"img_{i}.png" for i in range(len(fine))], "batch_label": f"{part} batch",
                  "fine_labels": fine, "coarse_labels": [coarse_names.index(parent[fine_names[f]]) for f in fine],
                  "data": rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8)}
        with open(folder / part, "wb") as f:
            pickle.dump(record, f, protocol=protocol)
    shown = [(rename or {}).get(n, n) for n in fine_names]
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": shown, "coarse_label_names": coarse_names}, f, protocol=protocol)
    return folder

"""Omniglot (Lake et al. 2015) as class pools and as packed N-way K-shot shards.

Sources, tried in this order under ``root`` (``source="auto"``):

* ``omniglot28.npz``: uint8 ``(1623, 20, 28, 28)``, ink 255 (only for ``image_size=28``);
* ``images_background.npz`` + ``images_evaluation.npz``: Lake's 105x105 bool arrays
  (True = white background), resized here with PIL's BOX filter (area averaging);
* ``omniglot-py/`` as written by ``torchvision.datasets.Omniglot`` (its zips and folders).

All give the same pixels (omniglot28.npz was made with the same BOX resize) and the same
class order: ``class_index = char_id - 1``, background characters first. Images become
float32 in [0, 1] with ink 1.0 and background 0.0.

Split (the MAML protocol of Finn et al. 2017, "1200 characters for training, irrespective
of alphabet, and the remaining for testing"): the 1,623 characters are shuffled by
``np.random.default_rng(split_seed).permutation`` (``split_seed=None`` keeps class_index
order, i.e. all 964 background characters then the evaluation ones); the first ``n_train``
(1200) are meta-train, the next ``n_val`` (100) meta-val and the rest (323) meta-test.
Finn's own code (Python ``random.seed(1)`` over its folder listing) used 1100/100/423;
``n_train=1100`` gives those sizes, not the same characters. Meta-train adds the 90, 180 and
270 degree rotations of each character as new classes (``ImageClasses(rotations=True)``).

Packed (:func:`pack_omniglot`), each character is one class record of a class shard; the
rotations are added when sampling, so the packed and the in-memory pools give the same
episodes for the same seed. Each record keeps its alphabet (``alphabet``, and ``superclass``
for samplers that draw an episode's classes within one alphabet, as Meta-Dataset's): Lake's
50 alphabets hold consecutive char_ids, in the order of ``splits/omniglot-alphabets.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from distmeta.data.classes import ClassRecord, pack_splits
from distmeta.data.manifest import Manifest, SourceIdentity, file_sha256
from distmeta.data.writer import ShardLayout
from distmeta.errors import DataError, NotFound

logger = logging.getLogger(__name__)
N_CHARACTERS = 1623
SPLITS = ("train", "val", "test")
Source = Literal["auto", "omniglot28", "lake_npz", "torchvision"]

OMNIGLOT_ENV = "DISTMETA_OMNIGLOT"
DEFAULT_OMNIGLOT = "~/.cache/distmeta/omniglot"


def omniglot_root(root: str | None = None) -> str:
    """``root``, else ``$DISTMETA_OMNIGLOT``, else ``~/.cache/distmeta/omniglot``."""
    return os.path.expanduser(root or os.environ.get(OMNIGLOT_ENV) or DEFAULT_OMNIGLOT)


@dataclass(frozen=True)
class OmniglotSplits:
    """Per split: images float32 ``[classes, 20, size, size]`` (ink 1.0) and their char_ids."""

    images: dict[str, np.ndarray]
    char_ids: dict[str, np.ndarray]
    source: SourceIdentity

    def __getitem__(self, split: str) -> np.ndarray:
        if split not in self.images:
            raise KeyError(f"split {split!r}: expected one of {list(self.images)}")
        return self.images[split]


def split_characters(split_seed: int | None = 1, n_train: int = 1200,
                     n_val: int = 100) -> dict[str, np.ndarray]:
    """Class indices (``char_id - 1``) of each split; see the module docstring."""
    if n_train < 1 or n_val < 0 or n_train + n_val >= N_CHARACTERS:
        raise DataError(f"n_train={n_train}, n_val={n_val}: need n_train >= 1, n_val >= 0 and "
                         f"n_train + n_val < {N_CHARACTERS}")
    order = (np.arange(N_CHARACTERS) if split_seed is None
             else np.random.default_rng(split_seed).permutation(N_CHARACTERS))
    return {"train": order[:n_train], "val": order[n_train:n_train + n_val],
            "test": order[n_train + n_val:]}


def _box(ink: np.ndarray, size: int) -> np.ndarray:
    """uint8 ink=255 image, area-resized to ``size`` x ``size``."""
    image = Image.fromarray(ink)
    return np.asarray(image if image.size == (size, size) else image.resize((size, size), Image.BOX))


def _from_omniglot28(root: Path, keep: np.ndarray) -> tuple[np.ndarray, SourceIdentity]:
    path = root / "omniglot28.npz"
    with np.load(path, allow_pickle=False) as z:
        images = z["images"]
    if images.shape != (N_CHARACTERS, 20, 28, 28):
        raise DataError(f"{path}: images has shape {images.shape}, expected ({N_CHARACTERS}, 20, 28, 28)")
    return images[keep], SourceIdentity("omniglot", file_sha256(path), {"file": path.name})


def _from_lake_npz(root: Path, keep: np.ndarray, size: int) -> tuple[np.ndarray, SourceIdentity]:
    files = [root / "images_background.npz", root / "images_evaluation.npz"]
    parts = []
    for path in files:
        with np.load(path, allow_pickle=False) as z:
            parts.append(z["images"])
    n = sum(p.shape[0] for p in parts)
    if n != N_CHARACTERS:
        raise DataError(f"{files}: {n} characters in all, expected {N_CHARACTERS}")
    out = np.empty((len(keep), 20, size, size), np.uint8)
    for row, c in enumerate(keep):
        part, j = (parts[0], c) if c < parts[0].shape[0] else (parts[1], c - parts[0].shape[0])
        for s in range(20):
            out[row, s] = _box(np.where(part[j, s], 0, 255).astype(np.uint8), size)
    shas = {p.name: file_sha256(p) for p in files}
    return out, SourceIdentity("omniglot", _combined(shas), {"files": shas, "resize": "PIL BOX"})


def _from_torchvision(root: Path, keep: np.ndarray, size: int) -> tuple[np.ndarray, SourceIdentity]:
    from torchvision.datasets import Omniglot

    paths: dict[int, list[Path]] = {}
    shas = {}
    for background in (True, False):
        ds = Omniglot(str(root), background=background, download=False)
        folder = Path(ds.target_folder)
        shas[folder.name + ".zip"] = file_sha256(folder.with_suffix(".zip"))
        for character, images in zip(ds._characters, ds._character_images, strict=True):  # noqa: SLF001
            for name, _ in images:
                paths.setdefault(int(name.split("_")[0]), []).append(folder / character / name)
    missing = sorted(set((keep + 1).tolist()) - set(paths))
    if missing:
        raise DataError(f"{root}/omniglot-py: {len(missing)} needed character(s) missing, e.g. "
                         f"char_ids {missing[:5]}; found {len(paths)} of {N_CHARACTERS}")
    out = np.empty((len(keep), 20, size, size), np.uint8)
    for row, c in enumerate(keep):
        drawings = sorted(paths[int(c) + 1])
        if len(drawings) != 20:
            raise DataError(f"{root}/omniglot-py: char_id {c + 1} has {len(drawings)} drawings, expected 20")
        for s, path in enumerate(drawings):
            with Image.open(path) as image:
                out[row, s] = _box(np.asarray(ImageOps.invert(image.convert("L"))), size)
    return out, SourceIdentity("omniglot", _combined(shas), {"files": shas, "loader": "torchvision"})


def _combined(shas: Mapping[str, str]) -> str:
    """One sha256 for several files: over their sorted ``name:sha256`` lines."""
    return hashlib.sha256("".join(f"{k}:{v}\n" for k, v in sorted(shas.items())).encode()).hexdigest()


def _pick_source(root: Path, image_size: int, source: Source) -> str:
    if source != "auto":
        return source
    if image_size == 28 and (root / "omniglot28.npz").is_file():
        return "omniglot28"
    if all((root / f"images_{s}.npz").is_file() for s in ("background", "evaluation")):
        return "lake_npz"
    if (root / "omniglot-py").is_dir():
        return "torchvision"
    raise NotFound(
        f"Omniglot not found under {root}: expected omniglot28.npz, images_background.npz + "
        "images_evaluation.npz, or torchvision's omniglot-py/ folder")


def omniglot_classes(root: str | Path, image_size: int = 28, split_seed: int | None = 1,
                     n_train: int = 1200, n_val: int = 100, limit_classes: int | None = None,
                     source: Source = "auto", dtype: str = "float32") -> OmniglotSplits:
    """The Omniglot class pools per split, in memory (see the module docstring): float32 in
    [0, 1] (ink 1.0), or ``dtype="uint8"`` (ink 255).

    ``limit_classes`` keeps the first that many characters of each split (for quick tests).
    """
    root = Path(root)
    if image_size < 1:
        raise DataError(f"image_size={image_size}: must be >= 1")
    if source == "omniglot28" and image_size != 28:
        raise DataError(f"source='omniglot28' holds 28x28 images, not image_size={image_size}")
    splits = split_characters(split_seed, n_train, n_val)
    if limit_classes is not None:
        splits = {name: ids[:limit_classes] for name, ids in splits.items()}
    keep = np.concatenate([splits[s] for s in SPLITS])
    kind = _pick_source(root, image_size, source)
    loaders = {"omniglot28": lambda: _from_omniglot28(root, keep),
               "lake_npz": lambda: _from_lake_npz(root, keep, image_size),
               "torchvision": lambda: _from_torchvision(root, keep, image_size)}
    if kind not in loaders:
        raise DataError(f"source={source!r}: expected one of {['auto', *loaders]}")
    images, identity = loaders[kind]()
    logger.info("loaded %d Omniglot characters from %s (%s)", len(keep), root, kind)
    bounds = np.cumsum([0] + [len(splits[s]) for s in SPLITS])
    pools = {s: images[bounds[i]:bounds[i + 1]] for i, s in enumerate(SPLITS)}
    if dtype != "uint8":
        pools = {s: p.astype(np.float32) / np.float32(255.0) for s, p in pools.items()}
    return OmniglotSplits(pools, {s: splits[s] + 1 for s in SPLITS}, identity)


def alphabets() -> list[str]:
    """The alphabet of each character, by ``class_index`` (``char_id - 1``)."""
    table = json.loads((Path(__file__).with_name("splits") / "omniglot-alphabets.json").read_text())
    out = [name for _, name, count in table for _ in range(count)]
    if len(out) != N_CHARACTERS:
        raise DataError(f"splits/omniglot-alphabets.json lists {len(out)} characters, not {N_CHARACTERS}")
    return out


def _class_records(images: np.ndarray, char_ids: np.ndarray, channels: int) -> Iterator[ClassRecord]:
    names = alphabets()
    for pixels, char_id in zip(images, char_ids, strict=True):
        stored = np.repeat(pixels[:, None], channels, axis=1)  # [20, C, H, W], ink 255
        alphabet = names[int(char_id) - 1]
        yield ClassRecord(np.ascontiguousarray(stored), f"char{int(char_id):04d}",
                          {"char_id": int(char_id), "alphabet": alphabet, "superclass": alphabet})


def pack_omniglot(root: str | Path, out_dir: str, *, image_size: int = 28, channels: int = 1,
                  split_seed: int | None = 1, n_train: int = 1200, n_val: int = 100,
                  limit_classes: int | None = None, source: Source = "auto",
                  layout: ShardLayout | None = None, progress: bool = False) -> Manifest:
    """Pack Omniglot as class shards: one record per character (its 20 drawings, uint8, ink
    255), split as in the module docstring. ``channels=3`` repeats the grey image (for the
    RGB 84-px path). Rotations are not stored: ``task.rotations`` adds them when sampling."""
    if channels not in (1, 3):
        raise DataError(f"channels={channels}: expected 1 or 3")
    data = omniglot_classes(root, image_size, split_seed, n_train, n_val, limit_classes, source,
                            dtype="uint8")
    params = {"image_size": [image_size, image_size], "channels": channels, "split_seed": split_seed,
              "n_train": n_train, "n_val": n_val, "limit_classes": limit_classes}
    splits = {s: _class_records(data[s], data.char_ids[s], channels) for s in SPLITS}
    return pack_splits(out_dir, splits, dataset="omniglot", params=params, source=data.source,
                       layout=layout, progress=progress)

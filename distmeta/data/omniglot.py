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
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from distmeta.data.episode import EpisodeRecord
from distmeta.data.manifest import Manifest, SourceIdentity, file_sha256
from distmeta.data.writer import ShardLayout, SplitSpec, publish, split_stream, write_split
from distmeta.tasks import ImageClasses, episode_rng

logger = logging.getLogger(__name__)
N_CHARACTERS = 1623
SPLITS = ("train", "val", "test")
Source = Literal["auto", "omniglot28", "lake_npz", "torchvision"]


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
        raise ValueError(f"n_train={n_train}, n_val={n_val}: need n_train >= 1, n_val >= 0 and "
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
        raise ValueError(f"{path}: images has shape {images.shape}, expected ({N_CHARACTERS}, 20, 28, 28)")
    return images[keep], SourceIdentity("omniglot", file_sha256(path), {"file": path.name})


def _from_lake_npz(root: Path, keep: np.ndarray, size: int) -> tuple[np.ndarray, SourceIdentity]:
    files = [root / "images_background.npz", root / "images_evaluation.npz"]
    parts = []
    for path in files:
        with np.load(path, allow_pickle=False) as z:
            parts.append(z["images"])
    n = sum(p.shape[0] for p in parts)
    if n != N_CHARACTERS:
        raise ValueError(f"{files}: {n} characters in all, expected {N_CHARACTERS}")
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
        raise ValueError(f"{root}/omniglot-py: {len(missing)} needed character(s) missing, e.g. "
                         f"char_ids {missing[:5]}; found {len(paths)} of {N_CHARACTERS}")
    out = np.empty((len(keep), 20, size, size), np.uint8)
    for row, c in enumerate(keep):
        drawings = sorted(paths[int(c) + 1])
        if len(drawings) != 20:
            raise ValueError(f"{root}/omniglot-py: char_id {c + 1} has {len(drawings)} drawings, expected 20")
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
    raise FileNotFoundError(
        f"Omniglot not found under {root}: expected omniglot28.npz, images_background.npz + "
        "images_evaluation.npz, or torchvision's omniglot-py/ folder")


def omniglot_classes(root: str | Path, image_size: int = 28, split_seed: int | None = 1,
                     n_train: int = 1200, n_val: int = 100, limit_classes: int | None = None,
                     source: Source = "auto") -> OmniglotSplits:
    """The Omniglot class pools per split, in memory (see the module docstring).

    ``limit_classes`` keeps the first that many characters of each split (for quick tests).
    """
    root = Path(root)
    if image_size < 1:
        raise ValueError(f"image_size={image_size}: must be >= 1")
    if source == "omniglot28" and image_size != 28:
        raise ValueError(f"source='omniglot28' holds 28x28 images, not image_size={image_size}")
    splits = split_characters(split_seed, n_train, n_val)
    if limit_classes is not None:
        splits = {name: ids[:limit_classes] for name, ids in splits.items()}
    keep = np.concatenate([splits[s] for s in SPLITS])
    kind = _pick_source(root, image_size, source)
    loaders = {"omniglot28": lambda: _from_omniglot28(root, keep),
               "lake_npz": lambda: _from_lake_npz(root, keep, image_size),
               "torchvision": lambda: _from_torchvision(root, keep, image_size)}
    if kind not in loaders:
        raise ValueError(f"source={source!r}: expected one of {['auto', *loaders]}")
    images, identity = loaders[kind]()
    logger.info("loaded %d Omniglot characters from %s (%s)", len(keep), root, kind)
    bounds = np.cumsum([0] + [len(splits[s]) for s in SPLITS])
    pools = {s: images[bounds[i]:bounds[i + 1]].astype(np.float32) / np.float32(255.0)
             for i, s in enumerate(SPLITS)}
    return OmniglotSplits(pools, {s: splits[s] + 1 for s in SPLITS}, identity)


def _records(pool: ImageClasses, char_ids: np.ndarray, split: str, n_episodes: int, seed: int,
             chunk_size: int) -> Iterator[EpisodeRecord]:
    base = len(char_ids)
    for chunk, start in enumerate(range(0, n_episodes, chunk_size)):
        rng = episode_rng(seed, chunk, split_stream(split))
        drawn = pool.draw(min(chunk_size, n_episodes - start), rng)
        for t in range(len(drawn.classes)):
            classes = [[int(char_ids[c % base]), 90 * int(c // base)] for c in drawn.classes[t]]
            meta = {"family": "omniglot", "split": split, "index": start + t, "seed": seed,
                    "way": pool.way, "shot": pool.shot, "query": pool.query,
                    "source_classes": classes}
            yield EpisodeRecord(drawn.support_x[t], drawn.support_y[t], drawn.query_x[t],
                                drawn.query_y[t], meta)


def pack_omniglot(root: str | Path, out_dir: str, episodes: Mapping[str, int], way: int = 5,
                  shot: int = 1, query: int = 15, seed: int = 0, *, split_seed: int | None = 1,
                  n_train: int = 1200, n_val: int = 100, limit_classes: int | None = None,
                  image_size: int = 28, rotations: bool = True, layout: ShardLayout | None = None,
                  chunk_size: int = 64, source: Source = "auto", progress: bool = False) -> Manifest:
    """Pack N-way K-shot Omniglot episodes: ``episodes={"train": 10000, "val": 600, "test": 600}``.

    ``query`` is per class. Rotations (if ``rotations``) are added to meta-train only. Each
    episode's ``meta.json`` lists its source classes as ``[char_id, degrees]`` per label.
    """
    unknown = set(episodes) - set(SPLITS)
    if unknown:
        raise ValueError(f"episodes has split(s) {sorted(unknown)}: expected some of {SPLITS}")
    layout = layout or ShardLayout()
    data = omniglot_classes(root, image_size, split_seed, n_train, n_val, limit_classes, source)
    rows = []
    for split, n in episodes.items():
        if n < 1:
            raise ValueError(f"episodes[{split!r}]={n}: must be >= 1")
        rotate = rotations and split == "train"
        pool = ImageClasses(data[split], way, shot, query, rotations=rotate)
        params = {"way": way, "shot": shot, "query": query, "rotations": rotate,
                  "image_size": image_size, "split_seed": split_seed, "n_train": n_train,
                  "n_val": n_val, "limit_classes": limit_classes,
                  "n_characters": len(data.char_ids[split]), "x_dtype": layout.x_dtype}
        spec = SplitSpec(split, "omniglot", params, "cross_entropy", seed, data.source)
        records = _records(pool, data.char_ids[split], split, n, seed, chunk_size)
        rows += write_split(out_dir, spec, records, total=n, layout=layout, progress=progress)
    return publish(out_dir, rows)

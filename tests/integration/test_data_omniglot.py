"""Omniglot from the shared arrays: pack a small subset as class shards, read it back, sample."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distmeta.data import (
    ClassShards,
    Manifest,
    ShardLayout,
    omniglot_classes,
    pack_omniglot,
    split_characters,
)
from distmeta.tasks import ImageClasses, episode_rng

ROOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "omniglot"  # ../shared beside the repo
LIMIT = 8
pytestmark = pytest.mark.skipif(
    not (ROOT / "omniglot28.npz").is_file(),
    reason=f"Omniglot arrays not found at {ROOT} (omniglot28.npz); these tests need the shared data")

LAKE = [ROOT / "images_background.npz", ROOT / "images_evaluation.npz", ROOT / "classes.csv"]
needs_lake = pytest.mark.skipif(
    not all(p.is_file() for p in LAKE),
    reason=f"Lake's 105x105 arrays and classes.csv not found under {ROOT}")


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    out = tmp_path_factory.mktemp("omniglot")
    pack_omniglot(ROOT, str(out), limit_classes=LIMIT, layout=ShardLayout(maxcount=3))
    return str(out)


def test_the_standard_split_is_disjoint_and_complete():
    splits = split_characters()
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes == {"train": 1200, "val": 100, "test": 323}
    assert len(np.unique(np.concatenate(list(splits.values())))) == 1623


def test_class_pools_are_float_ink_one():
    data = omniglot_classes(ROOT, limit_classes=LIMIT)
    for split in ("train", "val", "test"):
        images = data[split]
        assert images.shape == (LIMIT, 20, 28, 28) and images.dtype == np.float32
        assert images.min() == 0.0 and images.max() == 1.0
        assert images.mean() < 0.3  # mostly background
    assert set(data.char_ids["train"]) == set(split_characters()["train"][:LIMIT] + 1)


@needs_lake
def test_lake_arrays_resize_to_the_same_pixels():
    small = omniglot_classes(ROOT, limit_classes=2, source="omniglot28")
    big = omniglot_classes(ROOT, limit_classes=2, source="lake_npz")
    for split in ("train", "val", "test"):
        assert np.array_equal(small[split], big[split])
    assert small.source.sha256 != big.source.sha256


def test_classes_read_back_with_their_drawings(packed):
    data = omniglot_classes(ROOT, limit_classes=LIMIT, dtype="uint8")
    info = Manifest.read(packed).split("test")
    assert info.is_classes and info.classes == LIMIT and info.images == 20 * LIMIT and len(info.rows) == 3
    pool = ClassShards(packed, "test")
    assert pool.image_shape == (1, 28, 28) and pool.counts().tolist() == [20] * LIMIT
    assert pool.names == [f"char{int(c):04d}" for c in data.char_ids["test"]]
    for c in (0, LIMIT - 1):
        assert np.array_equal(pool.images(c, np.arange(20))[:, 0], data["test"][c])


def test_packed_and_in_memory_pools_give_the_same_episodes(packed):
    memory = omniglot_classes(ROOT, limit_classes=LIMIT)["train"]
    a = ImageClasses(ClassShards(packed, "train"), 5, 1, 15, rotations=True).sample(6, 3, 7, 1)
    b = ImageClasses(memory, 5, 1, 15, rotations=True).sample(6, 3, 7, 1)
    for name in ("support_x", "support_y", "query_x", "query_y"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert a.support_x.shape == (6, 5, 1, 28, 28) and a.query_x.shape == (6, 75, 1, 28, 28)
    assert a.support_y.tolist() == [list(range(5))] * 6


def test_rotations_are_new_classes_of_meta_train_only(packed):
    tasks = ImageClasses(ClassShards(packed, "train"), 5, 1, 1, rotations=True)
    assert tasks.n_classes == 4 * LIMIT
    drawn = np.concatenate([tasks.draw(8, episode_rng(0, s, 0)).classes.ravel() for s in range(5)])
    assert set(drawn // LIMIT) == {0, 1, 2, 3}


def test_no_meta_test_character_in_meta_train(packed):
    train, val, test = (set(ClassShards(packed, s).names) for s in ("train", "val", "test"))
    assert len(train) == len(val) == len(test) == LIMIT
    assert not train & test and not train & val and not val & test


def test_an_rgb_84_pixel_pack_repeats_the_grey_drawing(tmp_path):
    out = str(tmp_path / "rgb")
    pack_omniglot(ROOT, out, limit_classes=2, image_size=84, channels=3)
    pool = ClassShards(out, "val")
    images = pool.images(1, np.array([3, 0]))
    assert images.shape == (2, 3, 84, 84) and images.dtype == np.uint8
    assert np.array_equal(images[:, 0], images[:, 2]) and images.max() == 255


@needs_lake
def test_torchvision_layout_gives_the_same_pixels(tmp_path, monkeypatch):
    """Lay out the few characters needed as torchvision's omniglot-py PNG tree and load it."""
    from torchvision.datasets import Omniglot

    monkeypatch.setattr(Omniglot, "_check_integrity", lambda self: True)
    keep = np.concatenate([v[:2] for v in split_characters().values()])
    with open(ROOT / "classes.csv", newline="") as f:
        rows = {int(r["class_index"]): r for r in csv.DictReader(f)}
    arrays = {s: np.load(ROOT / f"images_{s}.npz")["images"] for s in ("background", "evaluation")}
    for split in arrays:
        (tmp_path / "omniglot-py" / f"images_{split}.zip").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "omniglot-py" / f"images_{split}.zip").write_bytes(b"placeholder")
    for c in keep:
        r = rows[int(c)]
        folder = tmp_path / "omniglot-py" / f"images_{r['split']}" / r["alphabet"] / r["character"]
        folder.mkdir(parents=True)
        for s in range(20):
            image = arrays[r["split"]][int(r["split_index"]), s]
            Image.fromarray(image).save(folder / f"{int(r['char_id']):04d}_{s + 1:02d}.png")
    loaded = omniglot_classes(tmp_path, limit_classes=2, source="torchvision")
    reference = omniglot_classes(ROOT, limit_classes=2, source="omniglot28")
    for split in ("train", "val", "test"):
        assert np.array_equal(loaded[split], reference[split])

"""Omniglot from the shared arrays: pack a small subset, read it back, check the split."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distmeta.data import (
    EpisodeReader,
    ManifestError,
    ShardEpisodeSource,
    ShardLayout,
    omniglot_classes,
    pack_omniglot,
    split_characters,
)

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
    pack_omniglot(ROOT, str(out), {"train": 60, "val": 20, "test": 30}, way=5, shot=1, query=15,
                  seed=4, limit_classes=LIMIT, layout=ShardLayout(maxcount=16))
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


def test_episodes_read_back_with_shapes_labels_and_rotations(packed):
    source = ShardEpisodeSource(packed, "train", seed=0, n_logical_shards=2)
    source.check_compatible(family="omniglot", way=5, shot=1, query=15)
    batch = source.sample(6, 0, 0, 1)
    assert batch.support_x.shape == (6, 5, 1, 28, 28) and batch.query_x.shape == (6, 75, 1, 28, 28)
    assert batch.loss == "cross_entropy"
    assert batch.support_y.tolist() == [list(range(5))] * 6
    assert batch.query_y[0].tolist() == sum(([k] * 15 for k in range(5)), [])
    assert 0.0 <= float(batch.support_x.min()) and float(batch.support_x.max()) <= 1.0
    rotations = {deg for rec in EpisodeReader(packed, "train").records()
                 for _, deg in rec.meta["source_classes"]}
    assert rotations == {0, 90, 180, 270}
    with pytest.raises(ManifestError, match="way=5 but the config expects way=20"):
        source.check_compatible(way=20)


def test_support_images_are_the_source_drawings(packed):
    data = omniglot_classes(ROOT, limit_classes=LIMIT)
    rec = next(EpisodeReader(packed, "test").records())
    row = {int(c): i for i, c in enumerate(data.char_ids["test"])}
    for label, (char_id, degrees) in enumerate(rec.meta["source_classes"]):
        assert degrees == 0
        drawings = data["test"][row[char_id]]
        assert any(np.array_equal(rec.support_x[label, 0], d) for d in drawings)


def test_no_meta_test_character_in_meta_train(packed):
    def characters(split):
        return {c for rec in EpisodeReader(packed, split).records() for c, _ in rec.meta["source_classes"]}

    train, val, test = characters("train"), characters("val"), characters("test")
    assert train and val and test
    assert not train & test and not train & val and not val & test
    assert not {d for rec in EpisodeReader(packed, "test").records() for _, d in rec.meta["source_classes"]} - {0}


def test_uint8_storage_reads_back_the_same_floats(packed, tmp_path):
    small = str(tmp_path / "u8")
    pack_omniglot(ROOT, small, {"test": 30}, seed=4, limit_classes=LIMIT,
                  layout=ShardLayout(maxcount=16, x_dtype="uint8"))
    a = next(EpisodeReader(packed, "test").batches(30))
    b = next(EpisodeReader(small, "test").batches(30))
    assert a.support_x.dtype == b.support_x.dtype
    assert np.array_equal(a.support_x.numpy(), b.support_x.numpy())
    assert np.array_equal(a.query_x.numpy(), b.query_x.numpy())


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

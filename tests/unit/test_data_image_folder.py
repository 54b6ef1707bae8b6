"""Packing from an image folder (one sub-folder per class)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from distmeta.data import EpisodeReader, ShardEpisodeSource, pack_image_folder


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for c in range(6):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(4 if c < 5 else 2):  # class5 is too small for shot + query = 3
            pixels = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


def test_pack_and_read_back(folder, tmp_path, caplog):
    out = str(tmp_path / "shards")
    manifest = pack_image_folder(folder, out, "train", n_episodes=12, way=3, shot=1, query=2,
                                 image_size=(8, 6), seed=1)
    assert "class5" in caplog.text
    info = manifest.split("train")
    assert info.family == "image_folder" and info.params["n_classes"] == 5
    batch = ShardEpisodeSource(out, "train").sample(4, 0, 0, 0)
    assert batch.support_x.shape == (4, 3, 3, 8, 6) and batch.query_x.shape == (4, 6, 3, 8, 6)
    assert batch.query_y[0].tolist() == [0, 0, 1, 1, 2, 2]
    rec = next(EpisodeReader(out, "train").records())
    names = rec.meta["source_classes"]
    assert len(set(names)) == 3 and "class5" not in names
    candidates = []
    for path in sorted((folder / names[0]).glob("*.png")):
        with Image.open(path) as img:
            resized = np.asarray(img.convert("RGB").resize((6, 8), Image.BILINEAR), np.float32) / 255
        candidates.append(resized.transpose(2, 0, 1))
    assert any(np.array_equal(rec.support_x[0], c) for c in candidates)


def test_grey_and_unknown_classes(folder, tmp_path):
    out = str(tmp_path / "grey")
    pack_image_folder(folder, out, "test", n_episodes=3, way=2, shot=1, query=1, image_size=5,
                      channels=1, classes=["class0", "class1"])
    batch = next(EpisodeReader(out, "test").batches(3))
    assert batch.support_x.shape == (3, 2, 1, 5, 5)
    with pytest.raises(ValueError, match="nope"):
        pack_image_folder(folder, out, "test", n_episodes=3, way=2, classes=["class0", "nope"])

"""Packers of the standard image benchmarks, on small data sets in each source's real format:
image folders (split folders or a split file), tiered-ImageNet, mini-ImageNet (Ravi &
Larochelle CSVs), CIFAR-FS and FC100 (torchvision's CIFAR-100 pickles)."""

from __future__ import annotations

import json
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from imagesets import cifar_names, save, write_cifar100
from PIL import Image

from distmeta.data.cifar import load_pickle, load_split, pack_cifar_fs, pack_fc100
from distmeta.data.class_shards import ClassShards
from distmeta.data.image_folder import pack_image_folder, pack_tiered_imagenet
from distmeta.data.imagenet import pack_mini_imagenet
from distmeta.data.manifest import Manifest


def read_back(out: str | Path, split: str) -> dict[str, np.ndarray]:
    """Every class of ``split`` as ``{name: uint8 [n, C, H, W]}``, in pool order."""
    pool = ClassShards(str(out), split)
    try:
        return {name: pool.images(c, np.arange(n))
                for c, (name, n) in enumerate(zip(pool.names, pool.counts(), strict=True))}
    finally:
        pool.close()


def expected(path: Path, size: int, mode: str = "RGB") -> np.ndarray:
    with Image.open(path) as img:
        img = img.convert(mode)
        if img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        array = np.asarray(img, np.uint8)
    return array.reshape(size, size, -1).transpose(2, 0, 1)


# ---------------------------------------------------------------- image folders

@pytest.fixture
def split_folders(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "folders"
    layout = {"train": ["b", "a", "c"], "val": ["d", "e"], "test": ["f"]}
    for split, classes in layout.items():
        for c in classes:
            for i in range(3):
                save(root / split / c / f"{i}.png", rng.integers(0, 256, (10 + i, 12, 3), dtype=np.uint8))
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_split_folders(split_folders, tmp_path):
    out = tmp_path / "out"
    manifest = pack_image_folder(split_folders, str(out), image_size=8)
    assert sorted(manifest.splits) == ["test", "train", "val"]
    info = manifest.split("train")
    assert info.params["image_size"] == [8, 8] and info.params["channels"] == 3
    assert info.params["dataset"] == "image-folder" and info.classes == 3 and info.images == 9
    train = read_back(out, "train")
    assert list(train) == ["a", "b", "c"] and all(v.shape == (3, 3, 8, 8) for v in train.values())
    paths = sorted((split_folders / "train" / "b").glob("*.png"))
    assert np.array_equal(train["b"], np.stack([expected(p, 8) for p in paths]))
    names = {s: set(read_back(out, s)) for s in ("train", "val", "test")}
    assert names["val"] == {"d", "e"} and names["test"] == {"f"}
    assert not (names["train"] & names["val"]) and not (names["train"] & names["test"])


@pytest.mark.parametrize("kind", ["json", "csv"])
def test_image_folder_split_file_grey(tmp_path, kind):
    rng = np.random.default_rng(1)
    root = tmp_path / "tree"
    for c in ("x", "y", "z", "unused"):
        for i in range(2):
            save(root / c / f"{i}.png", rng.integers(0, 256, (6, 6), dtype=np.uint8))
    split = {"train": ["y", "x"], "test": ["z"]}
    path = tmp_path / f"split.{kind}"
    if kind == "json":
        path.write_text(json.dumps(split))
    else:
        path.write_text("class,split\ny,train\nx,train\nz,test\n")
    out = tmp_path / "out"
    manifest = pack_image_folder(root, str(out), image_size=6, channels=1, split_file=path)
    assert manifest.split("train").params["layout"] == "split-file"
    train = read_back(out, "train")
    assert list(train) == ["x", "y"] and set(read_back(out, "test")) == {"z"}
    raw = np.stack([np.asarray(Image.open(p))[None] for p in sorted((root / "x").glob("*.png"))])
    assert np.array_equal(train["x"], raw)  # already 6x6: stored as decoded


def test_image_folder_errors(split_folders, tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        pack_image_folder(tmp_path / "nowhere", out)
    flat = tmp_path / "flat"
    save(flat / "cls" / "0.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="expected train/ val/ test/ class folders under"):
        pack_image_folder(flat, out)
    (tmp_path / "s.json").write_text(json.dumps({"train": ["cls", "ghost"]}))
    with pytest.raises(FileNotFoundError, match="'ghost'"):
        pack_image_folder(flat, out, split_file=tmp_path / "s.json")
    (tmp_path / "s2.json").write_text(json.dumps({"train": ["cls"], "val": ["cls"]}))
    with pytest.raises(ValueError, match="'cls' is listed in split 'train' and in split 'val'"):
        pack_image_folder(flat, out, split_file=tmp_path / "s2.json")
    (split_folders / "val" / "empty").mkdir()
    with pytest.raises(ValueError, match=r"val/empty: no images"):
        pack_image_folder(split_folders, out)
    (split_folders / "val" / "empty").rmdir()
    save(split_folders / "val" / "a" / "0.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="'a' is in split 'train' and in split 'val'"):
        pack_image_folder(split_folders, out, image_size=4)


def test_image_folder_min_images(split_folders, tmp_path, caplog):
    save(split_folders / "train" / "tiny" / "0.png", np.zeros((4, 4, 3), np.uint8))
    manifest = pack_image_folder(split_folders, str(tmp_path / "out"), image_size=4, min_images=2)
    assert manifest.split("train").params["dropped_classes"] == ["tiny"] and "tiny" in caplog.text
    assert manifest.split("train").classes == 3


def test_tiered_imagenet_84px_jpgs(tmp_path, caplog):
    rng = np.random.default_rng(2)
    root = tmp_path / "tiered"
    for split, classes in {"train": ["n01", "n02"], "val": ["n03"], "test": ["n04"]}.items():
        for c in classes:
            for i in range(2):
                save(root / split / c / f"{c}_{i}.jpg", rng.integers(0, 256, (84, 84, 3), dtype=np.uint8))
    out = tmp_path / "out"
    manifest = pack_tiered_imagenet(root, str(out))
    assert manifest.split("train").params["dataset"] == "tiered-imagenet"
    assert "has 2 classes; the benchmark has 351" in caplog.text
    got = read_back(out, "train")["n02"]
    assert np.array_equal(got, np.stack([expected(p, 84) for p in sorted((root / "train" / "n02").iterdir())]))
    (tmp_path / "pkl").mkdir()
    (tmp_path / "pkl" / "train_images_png.pkl").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="original pickles"):
        pack_tiered_imagenet(tmp_path / "pkl", str(out))


# ---------------------------------------------------------------- mini-ImageNet

@pytest.fixture
def mini(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "mini"
    classes = {"train": ["n0200", "n0100", "n0300"], "val": ["n0400"], "test": ["n0500", "n0600"]}
    for split, labels in classes.items():
        rows = ["filename,label"]
        for label in labels:
            for i in (2, 0, 1):  # CSV order, not name order
                name = f"{label}{i:08d}.jpg"
                save(root / "images" / name, rng.integers(0, 256, (84, 84, 3), dtype=np.uint8))
                rows.append(f"{name},{label}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def test_mini_imagenet(mini, tmp_path):
    out = tmp_path / "out"
    manifest = pack_mini_imagenet(mini, str(out), image_size=84)
    assert manifest.split("val").params["dataset"] == "mini-imagenet"
    assert [manifest.split(s).classes for s in ("train", "val", "test")] == [3, 1, 2]
    train = read_back(out, "train")
    assert list(train) == ["n0200", "n0100", "n0300"]  # first-appearance order
    paths = [mini / "images" / f"n0100{i:08d}.jpg" for i in (2, 0, 1)]
    assert np.array_equal(train["n0100"], np.stack([expected(p, 84) for p in paths]))
    small = read_back(pack_mini_imagenet(mini, str(tmp_path / "small"), 16).uri, "test")
    assert small["n0600"].shape == (3, 3, 16, 16)


def test_mini_imagenet_csv_dir_and_errors(mini, tmp_path):
    out = str(tmp_path / "out")
    (mini / "test.csv").rename(tmp_path / "test.csv")
    with pytest.raises(FileNotFoundError, match=r"test\.csv.*ImageNet"):
        pack_mini_imagenet(mini, out)
    csvs = tmp_path / "csvs"
    csvs.mkdir()
    for s in ("train", "val"):
        (mini / f"{s}.csv").rename(csvs / f"{s}.csv")
    (tmp_path / "test.csv").rename(csvs / "test.csv")
    assert pack_mini_imagenet(mini, out, 84, csv_dir=csvs).split("test").classes == 2
    with open(csvs / "val.csv", "a") as f:
        f.write("gone1.jpg,n0400\ngone2.jpg,n0400\n")
    with pytest.raises(FileNotFoundError, match=r"val\.csv: 2 image\(s\).*gone1\.jpg"):
        pack_mini_imagenet(mini, out, csv_dir=csvs)
    (csvs / "val.csv").write_text("file,class\nx.jpg,n0400\n")
    with pytest.raises(ValueError, match=r"val\.csv: header"):
        pack_mini_imagenet(mini, out, csv_dir=csvs)
    (mini / "images").rename(mini / "imgs")
    with pytest.raises(FileNotFoundError, match=r"images: folder not found"):
        pack_mini_imagenet(mini, out, csv_dir=csvs)


# ---------------------------------------------------------------- CIFAR-FS / FC100

def source_images(folder: Path, name: str) -> np.ndarray:
    fine_names = cifar_names()[0]
    parts = [load_pickle(folder / p) for p in ("train", "test")]
    return np.concatenate([p["data"][np.asarray(p["fine_labels"]) == fine_names.index(name)] for p in parts]
                          ).reshape(-1, 3, 32, 32)


def test_cifar_fs(tmp_path):
    folder = write_cifar100(tmp_path / "cifar")
    out = tmp_path / "out"
    manifest = pack_cifar_fs(tmp_path / "cifar", str(out))
    assert [manifest.split(s).classes for s in ("train", "val", "test")] == [64, 16, 20]
    info = manifest.split("test")
    assert info.params["image_size"] == [32, 32] and info.params["dataset"] == "cifar-fs"
    assert info.images == 20 * 4
    splits = {s: read_back(out, s) for s in ("train", "val", "test")}
    assert list(splits["train"])[:2] == ["dolphin", "seal"]  # split-file order
    assert not set(splits["train"]) & set(splits["val"]) and not set(splits["val"]) & set(splits["test"])
    assert np.array_equal(splits["test"]["whale"], source_images(folder, "whale"))


def test_fc100(tmp_path):
    folder = write_cifar100(tmp_path / "cifar", protocol=5)
    out = tmp_path / "out"
    manifest = pack_fc100(folder, str(out))  # the cifar-100-python folder itself also works
    assert [manifest.split(s).classes for s in ("train", "val", "test")] == [60, 20, 20]
    _, _, parent = cifar_names()
    val = read_back(out, "val")
    assert set(val) == {c for c, s in parent.items() if s in load_split("fc100", "val")}
    name = next(iter(val))
    assert np.array_equal(val[name], source_images(folder, name)) and len(val[name]) == 4


def test_cifar_errors(tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python.*download=True"):
        pack_cifar_fs(tmp_path / "none", out)
    write_cifar100(tmp_path / "renamed", per_class=(1, 0), rename={"dolphin": "dolphinn"})
    with pytest.raises(ValueError, match=r"class 'dolphin' is not in .*meta"):
        pack_cifar_fs(tmp_path / "renamed", out)
    calls = []
    fake = types.ModuleType("torchvision.datasets")
    fake.CIFAR100 = lambda root, train, download: calls.append((root, train, download))
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake)
    with pytest.raises(ValueError, match="dolphin"):
        pack_cifar_fs(tmp_path / "renamed", out, download=True)
    assert calls == [(str(tmp_path / "renamed"), True, True), (str(tmp_path / "renamed"), False, True)]


def test_cifar_superclass_mismatch_and_unsafe_pickle(tmp_path):
    folder = write_cifar100(tmp_path / "cifar", per_class=(1, 0))
    record = load_pickle(folder / "train")
    fine_names, coarse_names, _ = cifar_names()
    seal = np.asarray(record["fine_labels"]) == fine_names.index("seal")
    record["coarse_labels"] = [coarse_names.index("fish") if s else c
                               for s, c in zip(seal, record["coarse_labels"], strict=True)]
    (folder / "train").write_bytes(pickle.dumps(record, protocol=2))
    with pytest.raises(ValueError, match="'seal' is listed under superclass 'aquatic_mammals'.*'fish'"):
        pack_cifar_fs(tmp_path / "cifar", str(tmp_path / "out"))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [Manifest]}))
    with pytest.raises(ValueError, match=r"meta: cannot be read \(refusing global distmeta"):
        pack_cifar_fs(tmp_path / "cifar", str(tmp_path / "out"))


def test_cifar_python2_style_pickle(tmp_path):
    """The real files come from Python 2: ``numpy.core`` globals and str (latin-1) pixel data."""
    data = (np.arange(2 * 3072) % 251).astype(np.uint8).reshape(2, 3072)
    reconstruct, args, state = data.__reduce__()

    class Py2Array:  # pickles as Python 2 did: the pixels as a (latin-1) str
        def __reduce__(self):
            return reconstruct, (np.ndarray, (0,), "b"), (*state[:4], state[4].decode("latin1"))

    raw = pickle.dumps({b"data": Py2Array(), b"fine_labels": [0, 1]}, protocol=2)
    raw = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    path = tmp_path / "train"
    path.write_bytes(raw)
    record = load_pickle(path)
    assert set(record) == {"data", "fine_labels"} and np.array_equal(record["data"], data)

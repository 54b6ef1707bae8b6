"""Fresh N-way K-shot tasks from class shards: a pure function of (seed, step, shard), drawn
from the whole class pool, fixed held-out episodes, bad files, the image cache, augmentation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from imagesets import image_folder_tree

from distmeta.config import ConfigError, load_config
from distmeta.data import ClassShards, ShardError, ShardLayout, pack_image_folder
from distmeta.tasks import Augment, ImageClasses, episode_rng
from distmeta.tasks.sources import check_data, evaluation_batches, task_source


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = image_folder_tree(tmp_path_factory.mktemp("src") / "tree", {"train": 12, "val": 4, "test": 5}, 6, size=16)
    out = str(tmp_path_factory.mktemp("shards"))
    pack_image_folder(root, out, image_size=16, layout=ShardLayout(maxcount=3))
    return out


def tasks(path, **kw):
    return ImageClasses(ClassShards(path, "train"), **({"way": 3, "shot": 1, "query": 2} | kw))


def same(a, b):
    return all(torch.equal(getattr(a, n), getattr(b, n)) for n in ("support_x", "support_y", "query_x", "query_y"))


def test_a_step_is_a_pure_function_of_seed_step_and_shard(packed):
    a = tasks(packed).sample(4, 7, 3, 2)
    b = tasks(packed).sample(4, 7, 3, 2)  # a fresh reader
    c = pickle.loads(pickle.dumps(tasks(packed))).sample(4, 7, 3, 2)  # as shipped to a Ray actor
    assert same(a, b) and same(a, c)
    assert a.support_x.shape == (4, 3, 3, 16, 16) and a.query_x.shape == (4, 6, 3, 16, 16)
    assert not same(a, tasks(packed).sample(4, 7, 3, 1)) and not same(a, tasks(packed).sample(4, 8, 3, 2))


def test_steps_draw_fresh_classes_from_the_whole_pool(packed):
    t = tasks(packed)
    drawn = [t.draw(4, episode_rng(0, step, 3)).classes for step in range(40)]
    assert any(not np.array_equal(drawn[s], drawn[s + 1]) for s in range(39))
    assert all(set(drawn[s].ravel()) != set(drawn[s + 1].ravel()) for s in range(3))
    assert set(np.concatenate(drawn).ravel()) == set(range(12))  # one logical shard sees every class


def test_held_out_episodes_are_one_numbered_set(packed):
    cfg = load_config(None, ["task.family=images", "task.way=3", "task.shot=1", "task.query=2",
                             f"data.path={packed}", "model.name=conv4", "model.in_channels=3",
                             "model.image_size=16", "model.hidden=4", "eval.way=2", "eval.shot=2"])
    whole = list(evaluation_batches(cfg, "val", 6, 6))
    parts = list(evaluation_batches(cfg, "val", 6, 4))
    assert len(whole) == 1 and [b.n_tasks for b in parts] == [4, 2]
    assert torch.equal(whole[0].query_x, torch.cat([b.query_x for b in parts]))
    assert whole[0].support_x.shape == (6, 4, 3, 16, 16)  # eval.way=2, eval.shot=2
    other_seed = load_config(None, [*[f"{k}={v}" for k, v in (("seed", 5),)], "task.family=images",
                                    f"data.path={packed}", "task.way=3", "task.query=2", "eval.way=2",
                                    "eval.shot=2", "model.name=conv4", "model.in_channels=3",
                                    "model.image_size=16", "model.hidden=4"])
    assert torch.equal(next(evaluation_batches(other_seed, "val", 6, 6)).query_x, whole[0].query_x)


def test_a_corrupt_or_missing_class_shard_is_named_or_skipped(packed, tmp_path, caplog):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(packed, copy)
    victim = copy / "train-000001.tar"
    original = victim.read_bytes()
    data = bytearray(original)
    data[2000] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="train-000001.tar.*sha256 mismatch"):
        tasks(str(copy)).sample(2, 0, 0, 0)
    pool = ClassShards(str(copy), "train", on_error="skip")
    ImageClasses(pool, 3, 1, 2).sample(2, 0, 0, 0)
    assert pool.skipped == ["train-000001.tar"] and pool.n_classes == 9
    assert "train-000001.tar" in caplog.text
    victim.write_bytes(original)
    (copy / "train-000002.tar").unlink()
    with pytest.raises(ShardError, match="train-000002.tar.*missing"):
        ClassShards(str(copy), "train").verify()


def test_the_image_cache_is_bounded(packed):
    small = ClassShards(packed, "train", cache_mb=3 * 16 * 16 * 3 / 2**20)  # room for 3 images
    first = small.images(0, np.arange(6))
    assert len(small._cache) == 3  # noqa: SLF001
    assert np.array_equal(small.images(0, np.arange(6)), first)
    assert np.array_equal(ClassShards(packed, "train", cache_mb=0).images(0, np.arange(6)), first)


def test_augmentation_is_seeded_and_off_by_default(packed):
    plain, aug = tasks(packed), tasks(packed, augment=Augment())
    a, b = aug.sample(3, 0, 1, 0), aug.sample(3, 0, 1, 0)
    assert same(a, b) and not same(a, plain.sample(3, 0, 1, 0))
    assert float(a.support_x.min()) >= 0.0 and float(a.support_x.max()) <= 1.0
    images = np.random.default_rng(0).random((50, 3, 16, 16)).astype(np.float32)
    flipped = images.copy()
    Augment(padding=0, jitter=0.0)(flipped, np.random.default_rng(1))
    mirrored = [np.array_equal(f, i[:, :, ::-1]) for f, i in zip(flipped, images, strict=True)]
    unchanged = [np.array_equal(f, i) for f, i in zip(flipped, images, strict=True)]
    assert all(m or u for m, u in zip(mirrored, unchanged, strict=True)) and 10 < sum(mirrored) < 40


def test_config_errors_name_the_key(packed):
    with pytest.raises(ConfigError, match="data.path"):
        load_config(None, ["task.family=images"])
    with pytest.raises(ConfigError, match="task.shots: unknown key for images"):
        load_config(None, ["task.family=images", f"data.path={packed}", "task.shots=3"])
    cfg = load_config(None, ["task.family=images", f"data.path={packed}", "task.way=3", "task.query=2",
                             "model.name=conv4", "model.image_size=16"])
    with pytest.raises(ConfigError, match=r"model.in_channels=1 but the images at data.path have 3"):
        check_data(cfg)
    big = load_config(None, ["task.family=images", f"data.path={packed}", "task.way=13", "model.name=conv4",
                             "model.in_channels=3", "model.image_size=16"])
    with pytest.raises(ValueError, match="task.way=13: the pool has only 12 classes"):
        task_source(big).sample(1, 0, 0, 0)

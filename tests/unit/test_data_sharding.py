"""Logical shards: disjoint files, exactly-once evaluation, reproducible episodes."""

from __future__ import annotations

import pytest
import torch

from distmeta.data import (
    EpisodeReader,
    ManifestError,
    ShardEpisodeSource,
    ShardLayout,
    pack_procedural,
)
from distmeta.tasks import Sinusoid


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("sinusoid")
    pack_procedural(Sinusoid(shots=3, query=4), str(root), {"train": 103, "test": 37}, seed=11,
                    layout=ShardLayout(maxcount=10))
    return str(root)


def _spy_reads(source):
    """Record the shard file of every episode the source actually reads."""
    seen = []
    store = source._store
    original = store.read

    def read(row, i):
        seen.append(row.path)
        return original(row, i)

    store.read = read
    return seen


def test_logical_shards_read_disjoint_files(packed):
    n_shards = 3
    files, reads = [], []
    for shard in range(n_shards):
        source = ShardEpisodeSource(packed, "train", seed=0, n_logical_shards=n_shards)
        seen = _spy_reads(source)
        for step in range(8):
            source.sample(9, 5, step, shard)
        files.append(set(source.files(shard)))
        reads.append(set(seen))
        assert reads[-1] <= files[-1]
    for a in range(n_shards):
        for b in range(a + 1, n_shards):
            assert not files[a] & files[b] and not reads[a] & reads[b]
    assert set().union(*files) == {f"train-{i:06d}.tar" for i in range(11)}


def test_evaluation_reads_every_episode_exactly_once(packed):
    indices = []
    for shard in range(4):
        reader = EpisodeReader(packed, "test", shard=shard, n_logical_shards=4)
        indices += [rec.meta["index"] for rec in reader.records()]
        assert sum(1 for _ in reader.records()) == reader.episodes
    assert sorted(indices) == list(range(37))
    whole = EpisodeReader(packed, "test")
    assert sum(b.n_tasks for b in whole.batches(8)) == 37


def test_same_seed_step_shard_gives_the_same_episodes_after_a_restart(packed):
    first = ShardEpisodeSource(packed, "train", seed=2, n_logical_shards=2)
    a = first.sample(16, 9, 4, 1)
    first.sample(16, 9, 5, 1)  # reading order must not matter
    restarted = ShardEpisodeSource(packed, "train", seed=2, n_logical_shards=2)
    b = restarted.sample(16, 9, 4, 1)
    for name in ("support_x", "support_y", "query_x", "query_y"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert first.locate(16, 9, 4, 1) == restarted.locate(16, 9, 4, 1)
    assert not torch.equal(a.support_x, first.sample(16, 9, 3, 1).support_x)
    assert not torch.equal(a.support_x, first.sample(16, 10, 4, 1).support_x)


def test_epochs_cover_the_shard_then_reshuffle(packed):
    source = ShardEpisodeSource(packed, "train", seed=0, n_logical_shards=2)
    n = source.describe()["logical_shards"][0]["episodes"]
    first_epoch = source.locate(n, 3, 0, 0)
    assert len(set(first_epoch)) == n
    assert set(source.locate(n, 3, 1, 0)) == set(first_epoch)
    assert source.locate(n, 3, 1, 0) != first_epoch


def test_more_logical_shards_than_files_is_an_error(packed):
    with pytest.raises(ManifestError, match="n_logical_shards=12.*11 shard file"):
        ShardEpisodeSource(packed, "train", n_logical_shards=12)
    with pytest.raises(ValueError, match="shard=2"):
        ShardEpisodeSource(packed, "train", n_logical_shards=2).sample(1, 0, 0, 2)


def test_a_pickled_source_replays_the_same_episodes(packed):
    import pickle

    source = ShardEpisodeSource(packed, "train", seed=1, n_logical_shards=2)
    a = source.sample(5, 0, 3, 0)
    copy = pickle.loads(pickle.dumps(source))
    assert torch.equal(copy.sample(5, 0, 3, 0).query_y, a.query_y)
    assert torch.equal(copy.sample(5, 0, 3, 0).support_x, a.support_x)

"""Procedural families packed into shards: roundtrip, determinism, manifest, interop."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import webdataset as wds

from distmeta.data import (
    EpisodeReader,
    Manifest,
    ManifestError,
    ShardEpisodeSource,
    ShardLayout,
    iter_episodes,
    pack_procedural,
)
from distmeta.data.writer import split_stream
from distmeta.tasks import LinearRepresentation, Sinusoid


def test_sinusoid_roundtrip_equals_the_arrays_written(tmp_path):
    family = Sinusoid(shots=5, query=7)
    pack_procedural(family, str(tmp_path), {"train": 100}, seed=3,
                    layout=ShardLayout(maxcount=30), chunk_size=40)
    expected = [family.sample(n, 3, chunk, split_stream("train")) for chunk, n in enumerate((40, 40, 20))]
    read = list(iter_episodes(str(tmp_path), "train", batch_size=40))
    assert [b.n_tasks for b in read] == [40, 40, 20]
    for got, want in zip(read, expected, strict=True):
        for name in ("support_x", "support_y", "query_x", "query_y"):
            assert torch.equal(getattr(got, name), getattr(want, name)), name
        assert got.loss == "mse"


def test_manifest_rows_describe_the_shards(tmp_path):
    pack_procedural(Sinusoid(), str(tmp_path), {"train": 50, "test": 20}, seed=1,
                    layout=ShardLayout(maxcount=16))
    table = pq.read_table(tmp_path / "manifest.parquet").to_pylist()
    train = [r for r in table if r["split"] == "train"]
    assert [r["path"] for r in train] == [f"train-{i:06d}.tar" for i in range(4)]
    assert [r["episodes"] for r in train] == [16, 16, 16, 2]
    assert [r["first_episode"] for r in train] == [0, 16, 32, 48]
    for r in table:
        assert (tmp_path / r["path"]).stat().st_size == r["bytes"]
        assert len(r["sha256"]) == 64 and r["family"] == "sinusoid"
        assert json.loads(r["family_params"])["shots"] == 10
        assert r["source_name"] == "sinusoid" and len(r["source_sha256"]) == 64
    assert Manifest.read(str(tmp_path)).splits == ["test", "train"]


def test_packing_is_deterministic_and_repacking_replaces_a_split(tmp_path):
    def pack(where, n):
        return pack_procedural(Sinusoid(), str(where), {"train": n}, seed=7, layout=ShardLayout(maxcount=10))

    a, b = pack(tmp_path / "a", 25), pack(tmp_path / "b", 25)
    assert [r.sha256 for r in a.rows] == [r.sha256 for r in b.rows]
    smaller = pack(tmp_path / "a", 12)  # the next generation: the old files stay until the manifest switched
    assert [r.path for r in smaller.rows] == ["train-g1-000000.tar", "train-g1-000001.tar"]
    assert sorted(p.name for p in (tmp_path / "a").glob("*.tar")) == ["train-g1-000000.tar", "train-g1-000001.tar"]


def test_linear_representation_stores_b_star(tmp_path):
    family = LinearRepresentation(d=8, k=2, rep_seed=5)
    pack_procedural(family, str(tmp_path), {"train": 10}, seed=0)
    source = ShardEpisodeSource(str(tmp_path), "train")
    assert np.array_equal(source.b_star, family.b_star)
    assert source.loss == "mse"
    batch = source.sample(4, 0, 0, 0)
    assert batch.support_x.shape == (4, 10, 8) and batch.query_y.shape == (4, 10, 1)


def test_plain_webdataset_reads_the_shards(tmp_path):
    manifest = pack_procedural(Sinusoid(), str(tmp_path), {"train": 30}, seed=0,
                               layout=ShardLayout(maxcount=8))
    samples = list(wds.WebDataset(manifest.urls("train"), shardshuffle=False))
    assert len(samples) == 30
    assert {k for k in samples[0] if not k.startswith("__")} == {
        "support_x.npy", "support_y.npy", "query_x.npy", "query_y.npy", "meta.json"}
    assert [json.loads(s["meta.json"])["index"] for s in samples] == list(range(30))


def test_opens_through_a_pyarrow_uri(tmp_path):
    pack_procedural(Sinusoid(), str(tmp_path), {"test": 12}, seed=0)
    reader = EpisodeReader(f"file://{tmp_path}", "test")
    assert sum(b.n_tasks for b in reader.batches(5)) == 12


def test_missing_manifest_and_unknown_split_are_clear(tmp_path):
    with pytest.raises(ManifestError, match="no manifest"):
        ShardEpisodeSource(str(tmp_path), "train")
    pack_procedural(Sinusoid(), str(tmp_path), {"train": 5}, seed=0)
    with pytest.raises(ManifestError, match="no split 'val'.*'train'"):
        ShardEpisodeSource(str(tmp_path), "val")

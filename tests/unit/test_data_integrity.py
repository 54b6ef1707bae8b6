"""Bad shards: a clear error naming the file, or skipped and counted; config mismatches."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import shutil

import numpy as np
import pytest
import webdataset as wds

from distmeta.data import (
    EpisodeReader,
    Manifest,
    ManifestError,
    ShardEpisodeSource,
    ShardError,
    ShardLayout,
    pack_procedural,
)
from distmeta.data.manifest import write_manifest
from distmeta.tasks import Sinusoid

BAD = "train-000001.tar"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    pack_procedural(Sinusoid(shots=3, query=3), str(root), {"train": 40}, seed=0,
                    layout=ShardLayout(maxcount=10))
    return root


@pytest.fixture
def packed(pristine, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(pristine, root)
    return root


def _corrupt(path):
    data = bytearray(path.read_bytes())
    data[2000] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:3000])


def _delete(path):
    path.unlink()


def _wrong_shape(path):
    """Rewrite one episode with a wrong shape, and re-hash the file in the manifest, so only
    the episode check can catch it."""
    samples = list(wds.WebDataset(str(path), shardshuffle=False))
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 1), np.float32), allow_pickle=False)
    samples[4]["support_x.npy"] = buf.getvalue()
    out = io.BytesIO()
    with wds.TarWriter(out, encoder=False, mtime=0) as writer:
        for sample in samples:
            writer.write({k: v for k, v in sample.items() if k == "__key__" or not k.startswith("__")})
    path.write_bytes(out.getvalue())
    root = str(path.parent)
    rows = [dataclasses.replace(r, bytes=len(out.getvalue()), sha256=hashlib.sha256(out.getvalue()).hexdigest())
            if r.path == path.name else r for r in Manifest.read(root).rows]
    write_manifest(root, rows)


DAMAGE = [(_corrupt, "sha256 mismatch"), (_truncate, "truncated: 3000 bytes"),
          (_delete, "file is missing"), (_wrong_shape, r"shape \(2, 1\).*manifest says shape \(3, 1\)")]


@pytest.mark.parametrize(("damage", "message"), DAMAGE, ids=lambda d: getattr(d, "__name__", ""))
def test_a_bad_shard_is_a_clear_error_naming_the_file(packed, damage, message):
    damage(packed / BAD)
    with pytest.raises(ShardError, match=f"shard {BAD}: .*{message}") as info:
        list(EpisodeReader(str(packed), "train").records())
    assert info.value.path == BAD
    source = ShardEpisodeSource(str(packed), "train", verify="lazy")
    with pytest.raises(ShardError, match=BAD):
        source.verify()


@pytest.mark.parametrize(("damage", "message"), DAMAGE, ids=lambda d: getattr(d, "__name__", ""))
def test_skip_mode_goes_on_and_counts(packed, damage, message, caplog):
    damage(packed / BAD)
    reader = EpisodeReader(str(packed), "train", on_error="skip")
    assert len(list(reader.records())) == 30
    assert reader.skipped == [BAD]
    assert BAD in caplog.text and "skipping bad shard" in caplog.text
    source = ShardEpisodeSource(str(packed), "train", n_logical_shards=2, on_error="skip")
    batches = [source.sample(8, 0, step, 1) for step in range(6)]  # shard 1 owns files 1 and 3
    assert all(b.n_tasks == 8 for b in batches)
    assert source.skipped == [BAD]
    assert {path for path, _ in source.locate(8, 0, 2, 1)} == {"train-000003.tar"}
    again = ShardEpisodeSource(str(packed), "train", n_logical_shards=2, on_error="skip")
    assert again.locate(8, 0, 5, 1) == source.locate(8, 0, 5, 1)


def test_all_files_of_a_shard_bad_is_an_error_even_when_skipping(packed):
    for name in ("train-000001.tar", "train-000003.tar"):
        _corrupt(packed / name)
    source = ShardEpisodeSource(str(packed), "train", n_logical_shards=2, on_error="skip")
    source.sample(4, 0, 0, 0)
    with pytest.raises(ShardError, match="every shard file of logical shard 1 is bad"):
        source.sample(4, 0, 0, 1)


def test_manifest_mismatch_raises_before_any_shard_is_read(packed):
    source = ShardEpisodeSource(str(packed), "train")
    source.check_compatible(family="sinusoid", shots=3, query=3)
    with pytest.raises(ManifestError, match=r"shots=3 but the config expects shots=10"):
        source.check_compatible(shots=10)
    with pytest.raises(ManifestError, match="family='sinusoid' but the config expects family='omniglot'"):
        source.check_compatible(family="omniglot")
    with pytest.raises(ManifestError, match="no parameter 'way'"):
        source.check_compatible(way=5)
    assert source.stats.files_indexed == 0 and source.stats.episodes == 0


def test_bad_on_error_value_is_rejected(packed):
    with pytest.raises(ValueError, match="on_error='ignore'"):
        ShardEpisodeSource(str(packed), "train", on_error="ignore")

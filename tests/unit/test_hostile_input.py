"""Input made to break the readers and the config: each is a clear, bounded error naming the
key or file, never a crash or a silent change; a transient read error is retried and never
decides by itself whether a file is skipped."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import time

import pytest

from distmeta.config import ConfigError, load_config
from distmeta.data import (
    EpisodeReader,
    Manifest,
    ManifestError,
    ShardEpisodeSource,
    ShardError,
    ShardLayout,
    pack_procedural,
)
from distmeta.data import store as store_module
from distmeta.data.errors import ShardUnavailable
from distmeta.data.manifest import write_manifest
from distmeta.tasks import Sinusoid

FILE = "train-000000.tar"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    pack_procedural(Sinusoid(shots=3, query=3), str(root), {"train": 20}, seed=0, layout=ShardLayout(maxcount=10))
    return root


@pytest.fixture
def packed(pristine, tmp_path):
    shutil.copytree(pristine, tmp_path / "data")
    return tmp_path / "data"


def rewrite_rows(root, **changes):
    rows = [dataclasses.replace(r, **changes) if r.path == FILE else r for r in Manifest.read(str(root)).rows]
    write_manifest(str(root), rows)


def test_a_tar_header_claiming_a_huge_size_is_a_shard_error_and_can_be_skipped(packed):
    """GNU base-256 size 2**40 in the second header, checksum and manifest sha256 made right,
    so only the size bound can catch it (before: MemoryError, around on_error: skip)."""
    path = packed / FILE
    data = bytearray(path.read_bytes())
    header = 512 + ((int(data[124:135], 8) + 511) // 512) * 512  # the second member's header
    data[header + 124:header + 136] = b"\x80" + (2**40).to_bytes(11, "big")
    data[header + 148:header + 156] = b" " * 8
    data[header + 148:header + 155] = f"{sum(data[header:header + 512]):06o}\0".encode()
    path.write_bytes(bytes(data))
    rewrite_rows(packed, sha256=hashlib.sha256(bytes(data)).hexdigest())
    with pytest.raises(ShardError, match=r"corrupt tar: member .* claims 1099511627776 bytes, more than the file's"):
        list(EpisodeReader(str(packed), "train").records())
    reader = EpisodeReader(str(packed), "train", on_error="skip")
    assert len(list(reader.records())) == 10 and reader.skipped == [FILE]


@pytest.mark.parametrize("bad_path", ["../../etc/passwd", "/etc/passwd", "a/../../b.tar", "s3://elsewhere/x.tar", ""])
def test_manifest_paths_stay_inside_the_data_directory(packed, bad_path):
    rewrite_rows(packed, path=bad_path)
    with pytest.raises(ManifestError, match="is not a plain relative path inside the data directory"):
        Manifest.read(str(packed))


def test_manifest_counts_are_bounded_by_the_file(packed):
    rewrite_rows(packed, episodes=10**9)
    with pytest.raises(ManifestError, match=r"records .* cannot fit in its \d+ bytes"):
        ShardEpisodeSource(str(packed), "train").sample(2, 0, 0, 0)


def test_a_transient_read_error_is_retried_and_a_lasting_one_is_never_a_skip(packed, monkeypatch):
    monkeypatch.setattr(store_module, "RETRY_WAITS_S", (0.0, 0.0))
    real = store_module.index_shard
    failures = {"left": 1}

    def flaky(fs, base, row):  # the read of a shard file fails as a flaky disk or network does
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OSError("Input/output error (injected)")
        return real(fs, base, row)

    monkeypatch.setattr(store_module, "index_shard", flaky)
    reader = EpisodeReader(str(packed), "train", on_error="skip")
    assert len(list(reader.records())) == 20 and reader.skipped == []  # retried, nothing skipped
    failures["left"] = 10**6  # lasting
    with pytest.raises(ShardUnavailable, match=rf"shard {FILE}: checking failed 3 times"):
        list(EpisodeReader(str(packed), "train", on_error="skip").records())


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    lines.append("runtime: {runtime_env: {env_vars: *i}}")
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="holds more than 100000 values once its YAML aliases are expanded"):
        load_config(tmp_path / "bomb.yaml")
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(("override", "message"), [
    ("outer.lr=.inf", "outer.lr: Input should be a finite number"),
    ("outer.lr=.nan", "outer.lr: Input should be a finite number"),
    ("runtime.step_timeout_s=.inf", "runtime.step_timeout_s: Input should be a finite number"),
    ("runtime.max_lag=100000", "runtime.max_lag: Input should be less than or equal to 64"),
    ("eval.episodes=0", "eval.episodes: Input should be greater than or equal to 1"),
    ("eval.episodes=100000000000", "eval.episodes: Input should be less than or equal to 1000000"),
    ("algorithm.inner_lr=.inf", r"algorithm.inner_lr=inf: must be a finite number > 0"),
    ("runtime.time_limit_s=1e300", "runtime.time_limit_s: Input should be less than or equal to"),
])
def test_non_finite_and_absurd_values_are_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("configs/sinusoid_maml.yaml", [override])


def test_error_messages_are_bounded():
    huge = "[" + ",".join(["123456789"] * 50000) + "]"
    with pytest.raises(ConfigError) as info:
        load_config("configs/sinusoid_maml.yaml", [f"outer.optimizer_args={{eps: {huge}}}"])
    assert len(str(info.value)) < 1000 and "eps" in str(info.value)

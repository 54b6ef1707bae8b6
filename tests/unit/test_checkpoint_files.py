"""Checkpoint files under crashes and failing storage (no Ray): synced writes, no temporary
files left, one owner pruning, bounded retries."""

import os

import pytest
import torch

from distmeta.rundir import layout
from distmeta.rundir.checkpoint import (
    CheckpointStorageError,
    CheckpointWriter,
    checkpoint_steps,
    clean_temporary,
    load_checkpoint,
    save_checkpoint,
)
from distmeta.rundir.storage import RunDir


def state(step, shard=0):
    return {"step": step, "params": {f"w{shard}": torch.full((3,), float(step))}, "optimizer": {}}


@pytest.fixture
def rd(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    run.makedirs()
    return run


def test_a_crash_between_two_shards_writes_keeps_the_previous_complete_checkpoint(rd):
    for k in range(2):
        save_checkpoint(rd, state(10, k), keep=1, shard=k, shards=2)
    save_checkpoint(rd, state(20, 1), keep=1, shard=1, shards=2)  # shard 1 first: it never prunes
    save_checkpoint(rd, state(30, 0), keep=1, shard=0, shards=2)  # the owner, then the crash
    assert checkpoint_steps(rd) == [10]
    restored = load_checkpoint(rd)
    assert restored["step"] == 10 and set(restored["params"]) == {"w0", "w1"}
    save_checkpoint(rd, state(30, 1), keep=1, shard=1, shards=2)
    save_checkpoint(rd, state(40, 1), keep=1, shard=1, shards=2)
    save_checkpoint(rd, state(40, 0), keep=1, shard=0, shards=2)  # 40 complete: the owner prunes the rest
    assert sorted(rd.list(layout.CHECKPOINTS)) == ["step-00000040.shard-0-of-2.pt", "step-00000040.shard-1-of-2.pt"]


def test_a_write_is_synced_file_then_folder(rd, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    save_checkpoint(rd, state(10), keep=3)
    assert synced == [False, True]


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary_file(rd, monkeypatch):
    save_checkpoint(rd, state(10), keep=3)
    before = (rd.path(layout.checkpoint(10)))
    size = os.path.getsize(before)

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        rd.write_bytes(layout.checkpoint(10), b"x" * 10)
    monkeypatch.undo()
    assert rd.list(layout.CHECKPOINTS) == ["step-00000010.pt"] and os.path.getsize(before) == size
    assert load_checkpoint(rd)["step"] == 10


def test_temporary_files_a_killed_driver_left_are_removed(rd):
    save_checkpoint(rd, state(10), keep=3)
    rd.write_bytes(f"{layout.CHECKPOINTS}/.tmp-0123abcd", b"half a checkpoint")
    clean_temporary(rd)
    assert rd.list(layout.CHECKPOINTS) == ["step-00000010.pt"]


class Flaky(RunDir):
    """A run directory whose first ``fail`` writes raise, as a store having a bad minute does."""

    def __init__(self, location, fail):
        super().__init__(location)
        self.fail = fail

    def write_bytes(self, name, data):
        if self.fail > 0:
            self.fail -= 1
            raise OSError(5, "Input/output error")
        super().write_bytes(name, data)


def test_a_failing_write_is_retried_with_backoff_then_named(tmp_path):
    good = CheckpointWriter(Flaky(str(tmp_path / "a"), fail=2), keep=3, retries=2, retry_wait_s=0.01)
    assert good.save(state(10)).endswith("step-00000010.pt") and good.failures == 2
    bad = CheckpointWriter(Flaky(str(tmp_path / "b"), fail=10), keep=3, retries=2, retry_wait_s=0.01)
    with pytest.raises(CheckpointStorageError, match=r"could not be written to .*checkpoints \(3 attempts; the last"):
        bad.save(state(10))
    assert bad.failures == 3
    bad.submit(state(20))  # nothing more is written once storage failed
    with pytest.raises(CheckpointStorageError):
        bad.flush()

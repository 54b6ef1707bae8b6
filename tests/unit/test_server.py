"""The parameter server as a plain class: idempotent apply, non-finite guard, shard-order
sums, clipping, zeroing trick, checkpoints (no Ray)."""

import math
import threading
import time

import pytest
import torch

from distmeta.config import load_config
from distmeta.rundir.checkpoint import CheckpointWriter, checkpoint_steps, load_checkpoint
from distmeta.rundir.storage import RunDir
from distmeta.runtime.server import ParameterServer, StaleStepError, lr_at


def make_server(tmp_path, *overrides):
    cfg = load_config(None, ["model.hidden=[4]", "runtime.meta_batch=4", "runtime.logical_shards=2",
                             "runtime.workers=1", "checkpoint.every=2", *overrides])
    return ParameterServer(cfg.to_dict(), str(tmp_path / "run"))


def shard_results(server, value=1.0):
    _, params = server.get()
    grads = {k: torch.full_like(v, value) for k, v in params.items()}
    return [(1, 2, grads, 2)], [(0, 1, {k: g.clone() for k, g in grads.items()}, 2)]


def test_apply_steps_once_and_rejects_duplicates_and_stale_steps(tmp_path):
    server = make_server(tmp_path)
    before = {k: v.clone() for k, v in server.get()[1].items()}
    stats, (next_step, next_params) = server.apply(0, *shard_results(server))
    assert server.get_step() == 1 == next_step and stats["skipped"] == 0.0
    # two shards each send a sum of 1s over 2 tasks: the mean over 4 tasks is 0.5 per entry
    assert stats["grad_norm"] == pytest.approx(0.5 * math.sqrt(sum(v.numel() for v in before.values())))
    after = {k: v.clone() for k, v in server.get()[1].items()}
    with pytest.raises(StaleStepError, match="step=0.*at step 1"):
        server.apply(0, *shard_results(server))
    with pytest.raises(StaleStepError, match="step=5"):
        server.apply(5, *shard_results(server))
    assert all(torch.equal(after[k], server.get()[1][k]) for k in after)
    assert not all(torch.equal(after[k], before[k]) for k in after)


def test_non_finite_meta_gradient_skips_the_step(tmp_path):
    server = make_server(tmp_path)
    before = {k: v.clone() for k, v in server.get()[1].items()}
    stats, _ = server.apply(0, *shard_results(server, float("nan")))
    assert stats["skipped"] == 1.0 and stats["skipped_steps"] == 1.0
    assert server.get_step() == 1
    assert all(torch.equal(before[k], v) for k, v in server.get()[1].items())


def test_missing_or_duplicate_shards_are_named(tmp_path):
    server = make_server(tmp_path)
    a, b = shard_results(server)
    with pytest.raises(ValueError, match=r"logical shard 0 is missing"):
        server.apply(0, a)
    with pytest.raises(ValueError, match="logical shards 1..1 were sent twice"):
        server.apply(0, a, a)


def test_clipping_and_zeroing_trick(tmp_path):
    server = make_server(tmp_path, "outer.clip_grad_norm=0.5", "outer.zero_head=true", "outer.optimizer=sgd", "outer.lr=1.0")
    before = {k: v.clone() for k, v in server.get()[1].items()}
    assert all(float(v.abs().max()) == 0 for k, v in before.items() if k.startswith("head."))
    server.apply(0, *shard_results(server, 3.0))
    after = server.get()[1]
    delta = torch.cat([(after[k] - before[k]).reshape(-1) for k in after if not k.startswith("head.")])
    body_total = sum(v.numel() for k, v in before.items() if not k.startswith("head."))
    total = sum(v.numel() for v in before.values())
    # SGD with lr 1 moves by the clipped gradient: norm 0.5 over all params, body share
    assert float(delta.norm()) == pytest.approx(0.5 * math.sqrt(body_total / total), rel=1e-5)
    assert all(float(v.abs().max()) == 0 for k, v in after.items() if k.startswith("head."))


def test_checkpoint_restores_params_optimizer_and_step(tmp_path):
    server = make_server(tmp_path)
    for step in range(3):
        server.apply(step, *shard_results(server, 0.1 * (step + 1)))
    server.writer.flush()
    rd = RunDir(str(tmp_path / "run"))
    assert checkpoint_steps(rd) == [2]
    restored = make_server(tmp_path)
    assert restored.get_step() == 2
    state = load_checkpoint(rd)
    assert state["step"] == 2
    server2 = make_server(tmp_path / "other")
    for step in range(2):
        server2.apply(step, *shard_results(server2, 0.1 * (step + 1)))
    for srv in (restored, server2):
        srv.apply(2, *shard_results(srv, 0.3))
    assert all(torch.equal(restored.get()[1][k], server2.get()[1][k]) for k in restored.params)


def test_checkpoints_keep_the_newest(tmp_path):
    server = make_server(tmp_path, "checkpoint.every=1", "checkpoint.keep=2")
    for step in range(5):
        server.apply(step, *shard_results(server))
    server.writer.flush()
    assert checkpoint_steps(RunDir(str(tmp_path / "run"))) == [4, 5]


class GatedRunDir(RunDir):
    """A run dir whose writes wait until the test opens the gate: storage as slow as we like."""

    def __init__(self, location):
        super().__init__(location)
        self.gate = threading.Event()

    def write_bytes(self, name, data):
        if not self.gate.wait(timeout=30):
            raise TimeoutError("gate never opened")
        super().write_bytes(name, data)


def test_checkpoints_are_written_behind_the_step_loop_and_appear_whole(tmp_path):
    server = make_server(tmp_path, "checkpoint.every=1")
    slow = GatedRunDir(str(tmp_path / "run"))
    server.writer = CheckpointWriter(slow, keep=3)
    t0 = time.perf_counter()
    server.apply(0, *shard_results(server))  # a checkpoint of step 1 is due: it must not block apply
    assert time.perf_counter() - t0 < 10
    assert checkpoint_steps(slow) == []  # not there until complete: never a partial file
    slow.gate.set()
    assert server.writer.flush().endswith("checkpoints/step-00000001.pt")
    assert load_checkpoint(slow)["step"] == 1
    assert server.checkpoint().endswith("step-00000001.pt")  # explicit: written and waited for


def test_lr_schedule():
    cfg = load_config(None, ["outer.lr=1.0", "outer.schedule=cosine", "outer.warmup_steps=10", "outer.steps=110"])
    assert lr_at(cfg, 0) == pytest.approx(0.1)
    assert lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 60) == pytest.approx(0.5)
    assert lr_at(cfg, 110) == pytest.approx(0.0, abs=1e-12)


def test_staircase_schedule_is_meta_datasets_exponential_decay():
    """tf.train.exponential_decay(lr, step, decay_every, rate, staircase=True), as Meta-Dataset's
    trainer builds it, is lr * rate ** (step // decay_every)."""
    cfg = load_config(None, ["outer.lr=0.0003", "outer.schedule=staircase", "outer.decay_every=500",
                             "outer.decay_rate=0.766"])
    assert [lr_at(cfg, t) for t in (0, 499, 500, 1999)] == pytest.approx([3e-4, 3e-4, 3e-4 * 0.766, 3e-4 * 0.766 ** 3])


def test_staircase_without_decay_every_names_the_key():
    from distmeta.config import ConfigError

    with pytest.raises(ConfigError, match="outer.decay_every"):
        load_config(None, ["outer.schedule=staircase"])


@pytest.mark.parametrize("rule,factor", [("none", 1.0), ("sqrt", 2.0), ("linear", 4.0)])
def test_lr_scaling_scales_the_peak_for_the_meta_batch_after_warm_up(rule, factor):
    cfg = load_config(None, ["outer.lr=0.01", f"outer.lr_scaling={rule}", "outer.lr_base_batch=16",
                             "runtime.meta_batch=64", "runtime.logical_shards=4", "outer.warmup_steps=4"])
    assert lr_at(cfg, 0) == pytest.approx(0.01 * factor / 4)
    assert lr_at(cfg, 3) == lr_at(cfg, 100) == pytest.approx(0.01 * factor)


def test_lr_scaling_without_a_base_batch_names_both_keys():
    from distmeta.config import ConfigError

    with pytest.raises(ConfigError, match="outer.lr_scaling=sqrt needs outer.lr_base_batch"):
        load_config(None, ["outer.lr_scaling=sqrt"])

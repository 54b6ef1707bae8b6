"""The server split over K shards (plain classes, no Ray): the same parameters as one server,
per-shard checkpoints that count only when complete, and restore of the newest complete one."""

import pytest
import torch

from distmeta.config import load_config
from distmeta.rundir.checkpoint import checkpoint_steps, load_checkpoint
from distmeta.rundir.storage import RunDir
from distmeta.runtime.server import ParameterServer
from distmeta.runtime.tree import deal
from distmeta.runtime.worker import MetaWorker

BASE = ["model.hidden=[8,8]", "runtime.meta_batch=8", "runtime.logical_shards=4", "checkpoint.every=2",
        "outer.clip_grad_norm=0.5"]


def setup(tmp_path, k, workers=2, name="run"):
    cfg = load_config(None, [*BASE, f"runtime.server_shards={k}", f"runtime.workers={workers}"]).to_dict()
    servers = [ParameterServer(cfg, str(tmp_path / name), shard) for shard in range(k)]
    return cfg, servers, [MetaWorker(cfg) for _ in range(workers)]


def run_steps(servers, workers, steps):
    """What the pipeline does per step, called directly."""
    for _ in range(steps):
        states = [s.get() for s in servers]
        step = states[0][0]
        results = [w.compute(step, shards, *states)
                   for w, shards in zip(workers, deal(list(range(4)), list(range(len(workers)))).values(), strict=False)]
        if len(servers) == 1:
            servers[0].apply(step, *[r[1] for r in results])
            continue
        norms = [s.reduce(step, *[r[1 + j] for r in results]) for j, s in enumerate(servers)]
        for s in servers:
            s.update(step, *norms)


def params(servers):
    return {k: v.clone() for s in servers for k, v in s.get()[1].items()}


def test_two_server_shards_give_the_parameters_of_one(tmp_path):
    _, one, w1 = setup(tmp_path, 1, name="one")
    _, two, w2 = setup(tmp_path, 2, name="two")
    assert set(two[0].params).isdisjoint(two[1].params) and len(two[0].params) and len(two[1].params)
    run_steps(one, w1, 5)
    run_steps(two, w2, 5)
    a, b = params(one), params(two)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_counts_only_when_every_shard_wrote_it_and_restore_takes_the_newest(tmp_path):
    cfg, servers, workers = setup(tmp_path, 2)
    run_steps(servers, workers, 4)
    for s in servers:
        s.writer.flush()
    rd = RunDir(str(tmp_path / "run"))
    assert checkpoint_steps(rd) == [0, 2, 4]
    rd.delete("checkpoints/step-00000004.shard-1-of-2.pt")  # shard 1 died before writing step 4
    assert checkpoint_steps(rd) == [0, 2]
    restarted = ParameterServer(cfg, str(tmp_path / "run"), 1)
    assert restarted.get_step() == 2
    assert servers[0].restore(2) == 2  # what the driver does to the others
    merged = load_checkpoint(rd)
    assert merged["step"] == 2 and set(merged["params"]) == set(params(servers))
    # and the replay from step 2 ends where an uninterrupted run does
    run_steps([servers[0], restarted], workers, 3)
    _, ref, ref_workers = setup(tmp_path, 2, name="ref")
    run_steps(ref, ref_workers, 5)
    a, b = params([servers[0], restarted]), params(ref)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_more_server_shards_than_tensors_is_named(tmp_path):
    with pytest.raises(Exception, match="runtime.server_shards=99"):
        setup(tmp_path, 99)

"""The runtime on a real local Ray: bit-identical results for 1, 2 and 4 workers, after a
killed worker, after a killed server, and after stop + resume."""

import contextlib
import os
import signal
import time

import psutil
import pytest
import ray
import torch

from distmeta.config import load_config
from distmeta.runtime.cluster import connect
from distmeta.runtime.run import Callbacks, train

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

BASE = ["model.hidden=[32,32]", "algorithm.inner_steps=3", "algorithm.vectorize=false",
        "runtime.meta_batch=8", "runtime.logical_shards=4", "outer.steps=8", "checkpoint.every=2",
        "tracking.enabled=false", "runtime.step_timeout_s=60"]


@pytest.fixture(scope="module")
def ray_session():
    session = connect(num_cpus=4, object_store_mb=200, dashboard=True)
    yield session
    ray.shutdown()


def config(*extra):
    return load_config(None, [*BASE, *extra])


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(ray_session, tmp_path_factory):
    """The fault-free run with 2 workers."""
    return train(config("runtime.workers=2"), run_dir=str(tmp_path_factory.mktemp("ref") / "run"))


def test_ray_binds_loopback_only(ray_session):
    assert ray_session.started_here
    assert ray_session.address.startswith("127.0.0.1:")
    assert ray_session.dashboard_url.startswith("127.0.0.1:")
    ray_pids = {p.pid for p in psutil.process_iter(["cmdline"])
                if any("ray" in part for part in (p.info["cmdline"] or []))}
    listening = [c for c in psutil.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in ray_pids]
    assert listening, "no Ray listening sockets found"
    for conn in listening:
        assert conn.laddr.ip in ("127.0.0.1", "::ffff:127.0.0.1"), conn


@pytest.mark.parametrize("workers", [1, 4])
def test_same_parameters_for_any_number_of_workers(reference, workers, tmp_path):
    # one worker logs every step: the reference (log_every 10) computes the rule's metrics on
    # steps 0 and 7 only, and there they are the same numbers
    result = train(config(f"runtime.workers={workers}", f"tracking.log_every={1 if workers == 1 else 10}"),
                   run_dir=str(tmp_path / "run"))
    assert result.step == 8
    assert same(result.params, reference.params)
    assert result.history[-1][1]["query_loss"] == reference.history[-1][1]["query_loss"]
    logged = {step: m for step, m in reference.history if "query_loss" in m}
    assert sorted(logged) == [0, 7]
    if workers == 1:
        assert all("query_loss_before" in m for _, m in result.history)
        for step, m in result.history:
            if step in logged:
                metric_keys = {k for k in logged[step] if k.startswith(("query_", "support_"))}
                assert metric_keys and all(m[k] == logged[step][k] for k in metric_keys)


def signal_at(step_no, actor_of, sig, sent):
    """An on_dispatch hook that sends ``sig`` once, at ``step_no``, to the actor ``actor_of(runner)``."""
    def hook(step, runner):
        if step == step_no and not sent:
            pid = ray.get(actor_of(runner).pid.remote())
            os.kill(pid, sig)
            sent.append(pid)
    return hook


def test_killed_worker_is_retried_and_result_is_identical(reference, tmp_path):
    killed = []
    kill_worker = signal_at(3, lambda runner: runner.pool.actors[0], signal.SIGKILL, killed)
    result = train(config("runtime.workers=2"), run_dir=str(tmp_path / "run"),
                   callbacks=Callbacks(on_dispatch=kill_worker))
    assert killed
    assert result.counters.retries >= 1
    assert result.history[-1][1]["retries"] >= 1
    assert same(result.params, reference.params)


def test_killed_server_restores_its_checkpoint_and_result_is_identical(reference, tmp_path):
    killed = []
    kill_server = signal_at(5, lambda runner: runner.server, signal.SIGKILL, killed)
    result = train(config("runtime.workers=2"), run_dir=str(tmp_path / "run"),
                   callbacks=Callbacks(on_dispatch=kill_server))
    assert killed
    assert result.counters.server_restarts >= 1
    assert same(result.params, reference.params)


def test_stop_and_resume_is_bit_identical(reference, tmp_path):
    run_dir = str(tmp_path / "run")
    first = train(config("runtime.workers=2"), run_dir=run_dir, until_step=5)
    assert first.step == 5
    resumed = train(resume=run_dir)
    assert resumed.step == 8
    assert [s for s, _ in resumed.history] == [5, 6, 7]
    assert same(resumed.params, reference.params)


def test_a_time_limit_stops_evaluates_and_resumes_bit_identical(reference, tmp_path):
    run_dir = str(tmp_path / "run")
    first = train(config("runtime.workers=2", "runtime.time_limit_s=0.001", "eval.episodes=16"), run_dir=run_dir)
    assert first.stopped_by_time_limit
    assert 1 <= first.step <= 1 + first.config.runtime.max_lag  # the steps already in flight complete
    assert [s for s, _ in first.history] == list(range(first.step))
    assert first.evaluation is not None
    resumed = train(resume=run_dir, overrides=["runtime.time_limit_s=null"])
    assert resumed.step == 8 and not resumed.stopped_by_time_limit
    assert same(resumed.params, reference.params)


def test_a_run_directory_is_never_overwritten(reference):
    with pytest.raises(FileExistsError, match="--resume"):
        train(config("runtime.workers=1"), run_dir=reference.run_dir)


def test_training_from_packed_shards_with_a_corrupt_file_skipped(ray_session, tmp_path):
    from distmeta.data import ShardLayout, pack_procedural
    from distmeta.tasks import Sinusoid

    data = tmp_path / "data"
    pack_procedural(Sinusoid(shots=10, query=10), str(data), {"train": 160, "test": 40},
                    layout=ShardLayout(maxcount=10))
    victim = sorted(data.glob("train-*.tar"))[5]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    cfg = config("runtime.workers=2", f"data.path={data}", "data.on_error=skip", "outer.steps=3",
                 "eval.episodes=40", "eval.steps=2")
    result = train(cfg, run_dir=str(tmp_path / "run"))
    assert result.step == 3
    assert result.history[-1][1]["skipped_files"] == 1
    assert result.evaluation is not None and result.evaluation.episodes == 40
    strict = config("runtime.workers=1", f"data.path={data}", "outer.steps=1")
    with pytest.raises(ValueError, match=victim.name):
        train(strict, run_dir=str(tmp_path / "strict"))


def test_hung_worker_times_out_and_its_shards_move(reference, tmp_path):
    stopped = []
    freeze_worker = signal_at(2, lambda runner: runner.pool.actors[1], signal.SIGSTOP, stopped)
    try:
        result = train(config("runtime.workers=2", "runtime.step_timeout_s=4"), run_dir=str(tmp_path / "run"),
                       callbacks=Callbacks(on_dispatch=freeze_worker), evaluate_at_end=False)
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert stopped and result.counters.retries >= 1
    assert same(result.params, reference.params)


@pytest.mark.parametrize("key,value", [("runtime.gpus_per_worker", 1), ("runtime.cpus_per_worker", 64)])
def test_more_resources_than_the_cluster_has_is_an_error_naming_the_key_at_once(ray_session, tmp_path, key, value):
    from distmeta.errors import ConfigError

    start = time.monotonic()
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        train(config("runtime.workers=2", f"{key}={value}"), run_dir=str(tmp_path / "run"))
    assert time.monotonic() - start < 30


def test_two_server_shards_and_a_killed_shard_give_the_same_bits(reference, tmp_path):
    """``runtime.server_shards=2``: each shard owns part of the parameters; a killed shard
    restores the newest complete checkpoint and the other is brought back to it."""
    two = config("runtime.workers=2", "runtime.server_shards=2")
    plain = train(two, run_dir=str(tmp_path / "plain"))
    killed = []
    kill_shard = signal_at(5, lambda runner: runner.servers[1], signal.SIGKILL, killed)
    faulty = train(two, run_dir=str(tmp_path / "faulty"), callbacks=Callbacks(on_dispatch=kill_shard))
    assert killed and faulty.counters.server_restarts >= 1
    assert same(faulty.params, plain.params)
    assert same(plain.params, reference.params)  # and the same as one server


def test_a_driver_dying_mid_pipeline_resumes_bit_identical(reference, tmp_path):
    """The driver's loop dies with steps in flight (as if killed); its run dir resumes."""
    def die(step, runner):
        if step == 5:
            raise KeyboardInterrupt

    run_dir = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train(config("runtime.workers=2", "runtime.max_lag=3"), run_dir=run_dir, callbacks=Callbacks(on_dispatch=die))
    resumed = train(resume=run_dir)
    assert resumed.step == 8 and resumed.history[0][0] < 5
    assert same(resumed.params, reference.params)

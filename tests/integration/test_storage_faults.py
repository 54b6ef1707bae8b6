"""Faults that long cluster runs meet, met through the command line as a user meets them; in
each, nothing is lost: the run ends bit-identical to one that never met the fault.

- checkpoint storage that fails: the run stops (non-zero exit, the MLflow run FAILED with the
  reason), its state is in the fallback folder, and a resume from there ends bit-identical;
- the newest checkpoint truncated to 0 bytes: the resume warns naming it and continues from
  the previous one;
- a resume with another number of server shards: it continues from the newest step;
- run-directory names with spaces, ``#``, ``%``, ``?`` and non-ASCII characters;
- a second driver on the same run directory is refused naming the holder, a dead holder's
  lease is taken over;
- repeated signals: the final checkpoint completes, the exit is 143; a signal during the final
  evaluation stops it, the checkpoint already written.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from distmeta.rundir.checkpoint import checkpoint_steps, load_checkpoint
from distmeta.rundir.storage import RunDir

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
DISTMETA = str(Path(sys.executable).with_name("distmeta"))
BASE = ["configs/sinusoid_maml.yaml", "outer.steps=40", "checkpoint.every=10", "runtime.workers=1",
        "runtime.meta_batch=10", "runtime.logical_shards=2", "eval.episodes=20", "tracking.enabled=false"]
TRACKED = ["tracking.enabled=true", "tracking.log_model=false", "tracking.system_metrics=false"]
ROOT = Path(__file__).resolve().parents[2]


def train(*args: str, ok: bool = True, timeout: float = 200) -> subprocess.CompletedProcess:
    result = subprocess.run([DISTMETA, "train", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if ok:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def trains(*runs: tuple[list[str], bool], timeout: float = 200) -> list[subprocess.CompletedProcess]:
    """``train(*args, ok=ok)`` of each ``(args, ok)`` at once: independent jobs side by side on
    the cluster (each in a run directory of its own); whatever is left is killed at the end."""
    procs = [subprocess.Popen([DISTMETA, "train", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True) for args, _ in runs]
    try:
        outputs = [proc.communicate(timeout=timeout) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    results = [subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
               for proc, (out, err) in zip(procs, outputs, strict=True)]
    for result, (_, ok) in zip(results, runs, strict=True):
        if ok:
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return results


def final(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(RunDir(str(run_dir)))["params"]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def cluster():
    """``--address`` of one local Ray that the runs of the storage and checkpoint tests join, as
    jobs on a cluster do, instead of each starting and stopping a Ray of its own (seconds a
    run): the faults met are the run directory's, not Ray's. Stopped with the module."""
    import ray

    from distmeta.runtime.cluster import connect

    session = connect(num_cpus=4, object_store_mb=200, dashboard=False)
    try:
        yield ["--address", session.address]
    finally:
        ray.shutdown()


class Started:
    """``distmeta train ARGS`` started now, in a process group of its own; ``wait()`` waits
    for it (once) and checks that it ended well."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([DISTMETA, "train", *args], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.out: str | None = None

    def wait(self) -> None:
        if self.out is None:
            self.out, _ = self.proc.communicate(timeout=200)
        assert self.proc.returncode == 0, self.out[-4000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def fault_free(tmp_path_factory, cluster):
    """The module's two runs without a fault, started at once on the cluster, beside the first
    test's own runs: the uninterrupted run every faulty one must end equal to, and one run to
    step 30 (that the truncated-checkpoint test copies)."""
    root = tmp_path_factory.mktemp("fault_free")
    runs = {"reference": Started(*BASE, "--run-dir", str(root / "reference"), "--no-eval", *cluster),
            "step30": Started(*BASE, "--run-dir", str(root / "step30"), "--until-step", "30", *cluster)}
    try:
        yield root, runs
    finally:
        for run in runs.values():
            run.kill()


@pytest.fixture(scope="module")
def reference(fault_free):
    """``reference()``: the final parameters of the uninterrupted run (waited for)."""
    root, runs = fault_free

    @functools.cache
    def params() -> dict[str, torch.Tensor]:
        runs["reference"].wait()
        return final(root / "reference")

    return params


def test_storage_that_fails_stops_the_run_and_loses_nothing(reference, cluster, tmp_path):
    run_dir, fallback, uri = tmp_path / "run", tmp_path / "fallback", f"sqlite:///{tmp_path}/mlflow.db"
    run_dir.mkdir()
    (run_dir / "checkpoints").write_text("not a folder")  # as a full disk or expired credentials look
    started = time.perf_counter()
    failed = train(*BASE, *TRACKED, f"tracking.uri={uri}", "checkpoint.retries=1", "checkpoint.retry_wait_s=0.05",
                   f"checkpoint.fallback_dir={fallback}", "--run-dir", str(run_dir), *cluster, ok=False)
    took = time.perf_counter() - started
    assert failed.returncode == 2 and "its state is in" in failed.stderr, failed.stderr[-2000:]
    (saved,) = fallback.iterdir()
    assert str(saved) in failed.stderr and "Traceback" not in failed.stderr
    step = load_checkpoint(RunDir(str(saved)))["step"]
    assert 10 <= step < 40 and took < 120
    tracked = json.loads((saved / "tracking.json").read_text())
    client = MlflowClient(uri)
    run = client.get_run(tracked["run_id"])
    assert run.info.status == "FAILED" and "could not be written" in run.data.tags["distmeta.failure"]
    assert client.get_metric_history(run.info.run_id, "train/checkpoint_failures")[-1].value >= 2
    train("--resume", str(saved), "--no-eval", *cluster)
    assert same(final(saved), reference())
    assert client.get_run(tracked["run_id"]).info.status == "FINISHED"  # the same MLflow run, continued


def test_a_truncated_newest_checkpoint_falls_back_and_other_server_shards_continue(fault_free, reference, cluster,
                                                                                   tmp_path):
    """One run to step 30, copied three times: its newest checkpoint emptied (the resume
    continues from the previous one), resumed on two server shards (from the newest step),
    every checkpoint emptied (refused, not restarted)."""
    root, runs = fault_free
    runs["step30"].wait()  # `distmeta train ... --until-step 30`, started with the module
    run_dir = tmp_path / "run"
    assert checkpoint_steps(RunDir(str(root / "step30"))) == [10, 20, 30]
    for copy in ("run", "sharded", "unreadable"):
        shutil.copytree(root / "step30", tmp_path / copy)
    (run_dir / "checkpoints" / "step-00000030.pt").write_bytes(b"")  # an unsynced rename, after a crash
    for name in ("step-00000010.pt", "step-00000020.pt", "step-00000030.pt"):  # none reads: refused, not restarted
        (tmp_path / "unreadable" / "checkpoints" / name).write_bytes(b"")
    resumed, sharded, refused = trains(  # the three copies resumed at once
        (["--resume", str(run_dir), "--no-eval", *cluster], True),
        (["--resume", str(tmp_path / "sharded"), "runtime.server_shards=2", "--no-eval", *cluster], True),
        (["--resume", str(tmp_path / "unreadable"), *cluster], False))

    assert "skipping the checkpoint of step 30" in resumed.stderr and "step-00000030.pt cannot be read" in resumed.stderr
    assert same(final(run_dir), reference())

    assert "from step 30" in sharded.stdout + sharded.stderr
    assert same(final(tmp_path / "sharded"), reference())
    assert (tmp_path / "sharded" / "checkpoints" / "step-00000040.shard-1-of-2.pt").is_file()

    assert refused.returncode == 2 and "no checkpoint reads" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "unreadable" / "checkpoints" / "step-00000000.pt").exists()


def test_run_directory_names_are_paths_and_one_driver_holds_one(tmp_path):
    run_dir = tmp_path / "r#1 a b%20ü?x"
    run_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lease = {"host": socket.gethostname(), "pid": dead.pid, "token": "x", "started": time.time(), "heartbeat": time.time()}
    (run_dir / "lease.json").write_text(json.dumps(lease))  # a driver that died: its lease is taken over
    ran = train(*BASE, "--run-dir", str(run_dir), "--resume", "auto", "--until-step", "10", "--no-eval")
    assert "taking over the lease" in ran.stderr
    assert (run_dir / "config.yaml").is_file() and (run_dir / "train.log").is_file()
    assert checkpoint_steps(RunDir(str(run_dir))) == [10] and not (tmp_path / "r").exists()
    assert not (run_dir / "lease.json").exists()  # released at the end
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (run_dir / "lease.json").write_text(json.dumps(lease | {"pid": holder.pid}))
        refused = train(*BASE, "--run-dir", str(run_dir), "--resume", "auto", ok=False, timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert refused.returncode == 2 and "in use by another driver" in refused.stderr
    assert f"pid {holder.pid}" in refused.stderr


def signalled(args: list[str], ready, times: int) -> tuple[int, str]:
    """Run ``args``; once ``ready()`` holds, send SIGTERM ``times`` times 50 ms apart; the exit
    code and stderr. The process group is killed if it is still there at the end."""
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not ready():
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it was signalled: " + proc.communicate()[1][-2000:]
        for _ in range(times):
            os.kill(proc.pid, signal.SIGTERM)
            time.sleep(0.05)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err


def test_repeated_signals_let_the_final_checkpoint_complete(tmp_path):
    run_dir = tmp_path / "run"
    args = [DISTMETA, "train", *BASE, "outer.steps=100000", "checkpoint.every=50", "--run-dir", str(run_dir)]
    returncode, err = signalled(args, lambda: checkpoint_steps(RunDir(str(run_dir))), times=5)
    assert returncode == 143, err[-2000:]
    assert "Traceback" not in err
    state = load_checkpoint(RunDir(str(run_dir)))
    assert state["step"] >= 50 and checkpoint_steps(RunDir(str(run_dir)))[-1] == state["step"]


def test_a_signal_during_the_final_evaluation_stops_it_after_the_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    args = [DISTMETA, "train", *BASE, "outer.steps=20", "eval.episodes=1000000", "--run-dir", str(run_dir)]
    log_file = run_dir / "train.log"
    returncode, err = signalled(args, lambda: log_file.exists() and "meta-testing the parameters of step" in
                                log_file.read_text(), times=1)
    assert returncode == 143, err[-2000:]
    assert "Traceback" not in err
    assert load_checkpoint(RunDir(str(run_dir)))["step"] == 20
    assert "evaluation" in log_file.read_text().split("meta-testing the parameters of step")[-1]

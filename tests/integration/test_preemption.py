"""Pre-emption through the real CLI and a real local Ray: SIGTERM mid-run stops cleanly (the
step in flight finished, a checkpoint at the server's step, the MLflow run KILLED, exit 143),
and the same command with ``--resume auto`` ends bit-identical to an uninterrupted run."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from mlflow import MlflowClient

from distmeta.rundir.checkpoint import checkpoint_steps, load_checkpoint
from distmeta.rundir.storage import RunDir

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

STEPS = 150  # about 1.2 s of steps: the first progress lines come after 0.2 s, long before the end
ARGS = ["configs/sinusoid_maml.yaml", f"outer.steps={STEPS}", "runtime.meta_batch=8", "runtime.logical_shards=4",
        "runtime.workers=1", "checkpoint.every=50", "tracking.system_metrics=false", "tracking.log_model=false",
        "runtime.dashboard=false", "runtime.stop_grace_s=30", "--no-eval", "--progress-every", "0.2"]
PROGRESS = re.compile(r"distmeta\.progress: step (\d+)/(\d+)")


def command(run_dir, db, *extra):
    return [sys.executable, "-m", "distmeta.cli", "train", *ARGS, "--run-dir", str(run_dir),
            f"tracking.uri=sqlite:///{db}", *extra]


def run(cmd, log):
    with open(log, "w") as out:
        return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=240).returncode


def final_params(run_dir):
    state = load_checkpoint(RunDir(str(run_dir)))
    return state["step"], state["params"]


def progress_steps(text):
    return [int(m[1]) for m in PROGRESS.finditer(text)]


def wait_for_progress(proc, log, at_least, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        steps = progress_steps(log.read_text())
        if steps and steps[-1] >= at_least:
            return steps[-1]
        time.sleep(0.1)
    raise AssertionError(f"no progress line past step {at_least}:\n{log.read_text()[-3000:]}")


def mlflow_status(run_dir, db):
    run_id = json.loads((run_dir / "tracking.json").read_text())["run_id"]
    return MlflowClient(tracking_uri=f"sqlite:///{db}").get_run(run_id).info.status


def test_sigterm_then_resume_auto_is_bit_identical_and_loses_no_step(tmp_path):
    db = tmp_path / "mlflow.db"
    reference = tmp_path / "reference"
    # The uninterrupted run, on a local Ray of its own while the pre-empted one runs; not
    # tracked (tracking does not touch the parameters; two processes writing one SQLite file
    # may meet a lock).
    with open(tmp_path / "reference.log", "w") as out:
        uninterrupted = subprocess.Popen(command(reference, db, "tracking.enabled=false"), stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
    try:
        pre_empted_and_resumed(tmp_path, db)
        assert uninterrupted.wait(timeout=240) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    finally:
        if uninterrupted.poll() is None:
            os.killpg(uninterrupted.pid, signal.SIGKILL)
            uninterrupted.wait()
    run_dir = tmp_path / "run"
    step, params = final_params(run_dir)
    ref_step, ref_params = final_params(reference)
    assert step == ref_step == STEPS
    assert params.keys() == ref_params.keys() and all(torch.equal(params[k], ref_params[k]) for k in params)


def pre_empted_and_resumed(tmp_path, db):
    """SIGTERM mid-run, then the same command with --resume auto; what is checked of each."""
    run_dir, log = tmp_path / "run", tmp_path / "first.log"
    with open(log, "w") as out:  # stdout is a file, not a terminal: plain progress lines
        proc = subprocess.Popen(command(run_dir, db, "--resume", "auto"), stdout=out, stderr=subprocess.STDOUT)
    try:
        seen = wait_for_progress(proc, log, at_least=10)
        assert seen < STEPS, "the run ended before it could be pre-empted"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
        stop_s = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == 128 + signal.SIGTERM, text[-3000:]
    assert "Started a local Ray instance" not in text and "mlflow.store" not in text  # no INFO chatter without -v
    stopped = int(re.search(r"stopped by SIGTERM at step (\d+) of", text)[1])
    assert checkpoint_steps(RunDir(str(run_dir)))[-1] == stopped  # a checkpoint at the server's step
    assert stopped >= max(progress_steps(text)) >= seen  # no completed step is lost
    assert stopped < STEPS
    assert stop_s < 30 + 30, f"exit took {stop_s:.1f} s"
    assert mlflow_status(run_dir, db) == "KILLED"
    assert "train.log" in os.listdir(run_dir) and "stopped by SIGTERM" in (run_dir / "train.log").read_text()

    # The same command again (as a requeued job runs it), with another worker count.
    assert run(command(run_dir, db, "--resume", "auto", "runtime.workers=2"), tmp_path / "second.log") == 0
    resumed = (tmp_path / "second.log").read_text()
    assert f"from step {stopped}" in resumed
    assert mlflow_status(run_dir, db) == "FINISHED"


def test_auto_resume_of_a_different_config_names_the_keys(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(subprocess.run(
        [sys.executable, "-m", "distmeta.cli", "config", "configs/sinusoid_maml.yaml", f"run_dir={run_dir}"],
        capture_output=True, text=True, timeout=60, check=True).stdout)
    proc = subprocess.run([sys.executable, "-m", "distmeta.cli", "train", "configs/sinusoid_maml.yaml", "--resume",
                           "auto", "--run-dir", str(run_dir), "outer.lr=0.01", "algorithm.inner_lr=1e-3"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "keys that differ: algorithm.inner_lr, outer.lr" in proc.stderr

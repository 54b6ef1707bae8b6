"""MlflowTracker against a real ``mlflow server`` over HTTP, including the server dying mid-run.

The server is started at most twice per module (once, then once more after the outage test
stops it), in its own process group, and always killed in the fixture's finalizer.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow_server import MlflowServer

from distmeta.tracking import MlflowTracker, Spill, tracker_options

logger = logging.getLogger(__name__)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow_server"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def _restore_http_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


def make_tracker(uri: str, spill_dir: Path, **kwargs: object) -> MlflowTracker:
    options: dict = {"system_metrics": False, "flush_interval_s": 3600.0, "max_retries": 2,
                     "backoff_s": 0.1, "max_wait_s": 2.0, "timeout_s": 2.0, "cooldown_s": 0.5,
                     **kwargs}
    return MlflowTracker(uri, "integration", spill_dir, options=tracker_options(**options))


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_logs_over_http_and_reads_back(server: MlflowServer, tmp_path: Path) -> None:
    if server.proc is None:
        server.start()
    tracker = make_tracker(server.uri, tmp_path / "spill")
    params = {"algorithm": {"name": "fomaml", "inner_lr": 0.01}, "outer": {"lr": 1e-3}}
    run_id = tracker.start("http-run", params, {"distmeta.nodes": "1"})
    assert run_id is not None
    timings = []
    for step in range(0, 50, 10):
        tracker.log_metrics(step, {f"train/m{i:02d}": step + i / 100 for i in range(20)})
        begin = time.perf_counter()
        tracker.flush()
        timings.append(time.perf_counter() - begin)
    logger.info("flush of 20 metrics over HTTP: median %.1f ms",
                1e3 * sorted(timings)[len(timings) // 2])
    plot = tmp_path / "curve.png"
    plot.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    tracker.log_artifact(str(plot), "plots")
    tracker.end()

    client = MlflowClient(server.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"algorithm.name": "fomaml", "algorithm.inner_lr": "0.01",
                               "outer.lr": "0.001"}
    assert run.data.tags["distmeta.nodes"] == "1"
    assert history(client, run_id, "train/m07") == [(s, s + 0.07) for s in range(0, 50, 10)]
    assert [f.path for f in client.list_artifacts(run_id, "plots")] == ["plots/curve.png"]
    assert not (tmp_path / "spill").exists()  # nothing spilled


def check_spilled_during_outage(spill_dir: Path, run_id: str, other_dir: Path,
                                other_id: str) -> None:
    """Steps 3..29 of ``run_id`` are in its spill file; ``other_id``'s metric and status too."""
    rows = [json.loads(x) for x in (spill_dir / "unsent_metrics.jsonl").read_text().splitlines()]
    assert sorted((r["step"], r["key"], r["value"], r["run_id"]) for r in rows) == sorted(
        (s, k, v, run_id) for s in range(3, 30)
        for k, v in (("loss", 1.0 - s / 100), ("acc", s / 100)))
    other_spill = Spill(other_dir)
    assert [(r.key, r.step, r.value) for r in other_spill.read_metrics(other_id)] == [
        ("loss", 1, 0.5)]
    assert other_spill.read_run_info()[other_id]["status"] == "FINISHED"


def test_server_dies_mid_run(server: MlflowServer, tmp_path: Path) -> None:
    if server.proc is None:
        server.start()
    spill_dir = tmp_path / "spill"
    tracker = make_tracker(server.uri, spill_dir, max_buffer=40)
    other = make_tracker(server.uri, tmp_path / "other_spill")
    run_id = tracker.start("outage", {"seed": 0}, {})
    other_id = other.start("ended-while-down", {}, {})
    for step in range(3):
        tracker.log_metrics(step, {"loss": 1.0 - step / 10, "acc": step / 10})
    tracker.flush()

    server.stop()
    begin = time.monotonic()
    for step in range(3, 30):  # 20 values per auto-send attempt (max_buffer=40)
        tracker.log_metrics(step, {"loss": 1.0 - step / 100, "acc": step / 100})
    tracker.flush()
    assert time.monotonic() - begin < 10.0
    begin = time.monotonic()
    other.log_metrics(1, {"loss": 0.5})
    other.end()
    assert time.monotonic() - begin < 15.0

    check_spilled_during_outage(spill_dir, run_id, tmp_path / "other_spill", other_id)

    server.start()  # the second and last start in this module
    assert server.starts <= 2
    time.sleep(0.6)  # let the tracker's cool-down (0.5 s) pass
    tracker.log_metrics(30, {"loss": 0.7, "acc": 0.3})
    tracker.flush()  # succeeds, then re-sends the spilled values
    tracker.end()
    client = MlflowClient(server.uri)
    assert history(client, run_id, "acc") == [(s, s / 10) for s in range(3)] + [
        (s, s / 100) for s in range(3, 30)] + [(30, 0.3)]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert not (spill_dir / "unsent_metrics.jsonl").exists()


def test_credentials_are_never_written(server: MlflowServer, tmp_path: Path) -> None:
    """`distmeta train` with `user:password@` in tracking.uri: the run trains and is tracked, and the password is in no file, tag, param, log line or
    artifact, and every run file is its owner's only."""
    import os
    import stat
    import subprocess
    import sys

    if server.proc is None:
        server.start()
    secret = "s3cr3tPass"
    uri = server.uri.replace("http://", f"http://alice:{secret}@")
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    proc = subprocess.run([str(Path(sys.executable).with_name("distmeta")), "train", "configs/sinusoid_maml.yaml",
                           "outer.steps=4", "runtime.workers=1", "eval.episodes=10", "tracking.system_metrics=false",
                           f"tracking.uri={uri}", "--run-dir", str(run_dir)],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=200, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert secret not in proc.stdout + proc.stderr
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert files and not [p for p in files if secret in p.read_bytes().decode("latin-1")]
    assert not [p for p in files if stat.S_IMODE(p.stat().st_mode) & 0o077], "run files readable by others"
    run_id = json.loads((run_dir / "tracking.json").read_text())["run_id"]
    client = MlflowClient(tracking_uri=server.uri)
    run = client.get_run(run_id)
    assert not [k for k, v in {**run.data.params, **run.data.tags}.items() if secret in v]
    assert run.data.params["tracking.uri"].startswith("http://***@")
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="", tracking_uri=server.uri))
    assert not [p for p in local.rglob("*") if p.is_file() and secret in p.read_bytes().decode("latin-1")]

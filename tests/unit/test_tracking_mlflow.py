"""MlflowTracker against a real local SQLite MLflow store, read back with MlflowClient."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from distmeta.tracking import (
    MlflowTracker,
    Spill,
    Tracker,
    flatten_params,
    resolve_tracking_uri,
    tracker_options,
)
from distmeta.tracking.spill import MetricRecord

CONFIG = {
    "algorithm": {"name": "maml", "inner_lr": 0.4, "inner_steps": 1},
    "model": {"kind": "mlp", "hidden": [40, 40]},
    "seed": 0,
}


@pytest.fixture(autouse=True)
def _restore_http_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tracker sets MLflow's HTTP env vars; undo that after each test."""
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow SQLite store; creating one costs ~5 s, copying it ~0 s."""
    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path: Path, template_db: Path) -> str:
    """A fresh SQLite tracking URI under ``tmp_path``."""
    shutil.copy(template_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path}/mlflow.db"


def make_tracker(store: str, tmp_path: Path, **kwargs: object) -> MlflowTracker:
    options: dict = {"system_metrics": False, "flush_interval_s": 3600.0, "backoff_s": 0.05,
                     "max_wait_s": 1.0, "timeout_s": 1.0, **kwargs}
    return MlflowTracker(store, "unit", tmp_path / "spill",
                         artifact_location=str(tmp_path / "artifacts"), options=tracker_options(**options))


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key),
                                              key=lambda m: (m.step, m.timestamp))]


def test_logs_params_metrics_tags_and_artifacts(store: str, tmp_path: Path) -> None:
    tracker = make_tracker(store, tmp_path)
    assert isinstance(tracker, Tracker)
    run_id = tracker.start("maml-seed0", CONFIG, {"distmeta.workers": "4", "team": "meta"})
    assert run_id is not None and tracker.run_id == run_id
    with pytest.raises(RuntimeError, match=run_id):
        tracker.start("second", {}, {})
    for step in range(5):
        tracker.log_metrics(step, {"train/query_loss": 1.0 / (step + 1), "train/step_time": 0.5})
    config = tmp_path / "config.yaml"
    config.write_text("algorithm:\n  name: maml\n")
    tracker.log_artifact(str(config))
    tracker.log_dict({"columns": ["shots", "acc"], "data": [[1, 0.9]]}, "eval/table.json")
    tracker.end()

    client = MlflowClient(store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "maml-seed0"
    assert run.data.params == flatten_params(CONFIG)
    assert run.data.params["model.hidden"] == "[40, 40]"
    assert run.data.tags["distmeta.workers"] == "4" and run.data.tags["team"] == "meta"
    assert history(client, run_id, "train/query_loss") == [(s, 1.0 / (s + 1)) for s in range(5)]
    assert history(client, run_id, "train/step_time") == [(s, 0.5) for s in range(5)]
    assert run.info.artifact_uri.startswith(str(tmp_path / "artifacts"))
    assert [f.path for f in client.list_artifacts(run_id)] == ["config.yaml", "eval"]
    table = client.download_artifacts(run_id, "eval/table.json", str(tmp_path / "dl"))
    assert json.loads(Path(table).read_text()) == {"columns": ["shots", "acc"], "data": [[1, 0.9]]}
    assert not (tmp_path / "spill" / "unsent_metrics.jsonl").exists()


def test_resume_continues_the_same_run(store: str, tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    first = make_tracker(store, tmp_path)
    run_id = first.start("r", CONFIG, {"attempt": "1"})
    for step in range(3):
        first.log_metrics(step, {"loss": float(step)})
    first.end("KILLED")

    resumed = {**CONFIG, "seed": 1, "resume": {"from_step": 3}}
    second = make_tracker(store, tmp_path)
    with caplog.at_level(logging.WARNING, logger="distmeta.tracking"):
        assert second.start("r", resumed, {"attempt": "2"}, resume_run_id=run_id) == run_id
    assert "seed" in caplog.text  # a changed param is named, not silently dropped
    client = MlflowClient(store)
    assert client.get_run(run_id).info.status == "RUNNING"
    for step in range(3, 5):
        second.log_metrics(step, {"loss": float(step)})
    second.end()

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["seed"] == "0" and run.data.params["resume.from_step"] == "3"
    assert run.data.tags["attempt"] == "2"
    assert history(client, run_id, "loss") == [(s, float(s)) for s in range(5)]
    exp = client.get_experiment_by_name("unit")
    assert len(client.search_runs([exp.experiment_id])) == 1


def test_flush_chunks_more_than_1000_metrics(store: str, tmp_path: Path) -> None:
    tracker = make_tracker(store, tmp_path, max_buffer=100_000)
    run_id = tracker.start("big", {}, {})
    for step in range(125):  # 125 steps x 20 keys = 2500 values, sent by one flush
        tracker.log_metrics(step, {f"m{k:02d}": step * 100.0 + k for k in range(20)})
    client = MlflowClient(store)
    assert client.get_run(run_id).data.metrics == {}  # still buffered
    tracker.flush()
    run = client.get_run(run_id)
    assert len(run.data.metrics) == 20
    for k in (0, 7, 19):
        assert history(client, run_id, f"m{k:02d}") == [(s, s * 100.0 + k) for s in range(125)]
    tracker.end()


def test_log_metrics_sends_when_buffer_is_full(store: str, tmp_path: Path) -> None:
    tracker = make_tracker(store, tmp_path, max_buffer=50)
    run_id = tracker.start("auto", {}, {})
    for step in range(3):  # 60 values >= 50: sent without an explicit flush
        tracker.log_metrics(step, {f"k{i}": float(i) for i in range(20)})
    assert history(MlflowClient(store), run_id, "k3") == [(0, 3.0), (1, 3.0), (2, 3.0)]
    tracker.end()


def test_system_metrics_are_recorded(store: str, tmp_path: Path) -> None:
    pytest.importorskip("psutil")
    tracker = make_tracker(store, tmp_path, system_metrics=True, system_metrics_interval_s=0.2)
    run_id = tracker.start("sys", {}, {})
    time.sleep(0.7)
    tracker.end()
    metrics = MlflowClient(store).get_run(run_id).data.metrics
    assert 0.0 <= metrics["system/cpu_utilization_percentage"] <= 100.0
    assert metrics["system/system_memory_usage_megabytes"] > 0


def test_spilled_metrics_are_resent_after_resume(store: str, tmp_path: Path) -> None:
    tracker = make_tracker(store, tmp_path)
    run_id = tracker.start("r", {}, {})
    tracker.end("FAILED")
    # As a driver that lost its server would have left them:
    Spill(tmp_path / "spill").write_metrics(run_id, [MetricRecord("loss", 0.7, 1, 1000)])
    Spill(tmp_path / "spill").write_metrics("other-run", [MetricRecord("loss", 9.0, 1, 1000)])
    again = make_tracker(store, tmp_path)
    again.start("r", {}, {}, resume_run_id=run_id)
    again.log_metrics(2, {"loss": 0.6})
    again.flush()
    assert history(MlflowClient(store), run_id, "loss") == [(1, 0.7), (2, 0.6)]
    assert Spill(tmp_path / "spill").read_metrics(run_id) == []
    assert len(Spill(tmp_path / "spill").read_metrics("other-run")) == 1
    again.end()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_spills_and_never_raises(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    tracker = make_tracker(uri, tmp_path, max_buffer=10)
    begin = time.monotonic()
    assert tracker.start("offline", CONFIG, {"team": "meta"}) is None
    for step in range(4):
        tracker.log_metrics(step, {"loss": step / 10, "acc": 0.5})
    artifact = tmp_path / "ckpt.pt"
    artifact.write_bytes(b"weights")
    tracker.log_artifact(str(artifact), "checkpoints")
    tracker.end("FAILED")
    assert time.monotonic() - begin < 10.0
    spill = Spill(tmp_path / "spill")
    rows = [json.loads(x) for x in spill.metrics_path.read_text().splitlines()]
    assert [(r["key"], r["step"], r["value"]) for r in rows] == [
        (k, s, v) for s in range(4) for k, v in (("loss", s / 10), ("acc", 0.5))]
    info = spill.read_run_info()["<no-run>"]
    assert info["params"] == flatten_params(CONFIG) and info["tags"] == {"team": "meta"}
    assert info["artifacts"] == [{"local_path": str(artifact), "artifact_path": "checkpoints"}]


def test_hung_server_costs_at_most_the_timeout(tmp_path: Path) -> None:
    with socket.socket() as sock:  # accepts connections (kernel backlog), never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        tracker = make_tracker(f"http://127.0.0.1:{sock.getsockname()[1]}", tmp_path,
                               timeout_s=1.0, max_wait_s=1.0)
        begin = time.monotonic()
        assert tracker.start("hung", {"a": 1}, {}) is None
        tracker.log_metrics(0, {"loss": 1.0})
        tracker.end()
        assert time.monotonic() - begin < 4.0
    spilled = Spill(tmp_path / "spill").read_metrics(None)
    assert [(r.key, r.step, r.value) for r in spilled] == [("loss", 0, 1.0)]


def test_unreachable_server_on_resume_keeps_the_run_id(tmp_path: Path) -> None:
    tracker = make_tracker(f"http://127.0.0.1:{_closed_port()}", tmp_path)
    assert tracker.start("r", {}, {}, resume_run_id="abc123") == "abc123"
    tracker.log_metrics(7, {"loss": 0.1})
    tracker.end()
    spill = Spill(tmp_path / "spill")
    assert [(r.key, r.step, r.value) for r in spill.read_metrics("abc123")] == [("loss", 7, 0.1)]
    assert spill.read_run_info()["abc123"]["status"] == "FINISHED"


def test_caller_errors_name_the_bad_value(store: str, tmp_path: Path) -> None:
    tracker = make_tracker(store, tmp_path)
    tracker.start("bad", {}, {})
    with pytest.raises(ValueError, match=r"'loss\[0\]'"):
        tracker.log_metrics(0, {"loss[0]": 1.0})
    with pytest.raises(TypeError, match="'acc' at step 3"):
        tracker.log_metrics(3, {"acc": "high"})  # type: ignore[dict-item]
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        tracker.log_artifact(str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match=r"'\.\./x.json'"):
        tracker.log_dict({}, "../x.json")
    with pytest.raises(ValueError, match="'DONE'"):
        tracker.end("DONE")
    tracker.end()


def test_default_uri_is_mlflow_local_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking_uri(None) == "http://127.0.0.1:5999"
    assert resolve_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"

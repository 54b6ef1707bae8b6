"""Nothing spilled is lost: what a down server could not take (params, tags, metrics spilled
before a run existed, a final status) is sent once a server answers; a chunk the server
refuses for good is dropped with a warning and counted, never blocking what follows. Real
MLflow stores; the down server is a closed port."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from distmeta.tracking import MlflowTracker, Spill, tracker_options


@pytest.fixture(scope="module")
def template_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path: Path, template_db: Path) -> str:
    shutil.copy(template_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path}/mlflow.db"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tracker(uri: str, tmp_path: Path) -> MlflowTracker:
    return MlflowTracker(uri, "spill", tmp_path / "spill", options=tracker_options(
        system_metrics=False, flush_interval_s=3600.0, max_retries=0, backoff_s=0.01, max_wait_s=0.5, timeout_s=0.5))


def test_what_was_spilled_before_a_run_existed_is_sent_with_the_next_run(store, tmp_path):
    down = tracker(f"http://127.0.0.1:{closed_port()}", tmp_path)
    assert down.start("first", {"lr": 0.1}, {"team": "meta"}) is None
    down.log_metrics(0, {"loss": 1.0})
    down.log_metrics(1, {"loss": 0.5})
    down.end("FINISHED")
    up = tracker(store, tmp_path)
    run_id = up.start("first", {"lr": 0.1}, {"team": "meta"})
    up.end("FINISHED")
    client = MlflowClient(store)
    run = client.get_run(run_id)
    assert run.data.params["lr"] == "0.1" and run.data.tags["team"] == "meta"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == [(0, 1.0), (1, 0.5)]
    spill = Spill(tmp_path / "spill")
    assert spill.read_metrics(None) == [] and spill.read_run_info() == {}


def test_a_final_status_that_was_spilled_is_sent_and_the_run_ends(store, tmp_path):
    first = tracker(store, tmp_path)
    stuck = first.start("stuck", {}, {})
    Spill(tmp_path / "spill").write_run_info(stuck, status="FINISHED")  # what end() spills when the server is down
    client = MlflowClient(store)
    assert client.get_run(stuck).info.status == "RUNNING"
    second = tracker(store, tmp_path)
    second.start("next", {}, {})
    assert client.get_run(stuck).info.status == "FINISHED"
    second.end("FINISHED")
    assert Spill(tmp_path / "spill").read_run_info() == {}


def test_a_chunk_refused_for_good_is_dropped_and_counted(store, tmp_path, monkeypatch, caplog):
    t = tracker(store, tmp_path)
    run_id = t.start("refused", {}, {})
    real = t._client.log_batch
    calls = {"n": 0}

    def refuse_first(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise MlflowException("metric refused", error_code=INVALID_PARAMETER_VALUE)
        return real(*args, **kwargs)

    monkeypatch.setattr(t._client, "log_batch", refuse_first)
    t.log_metrics(0, {"loss": 1.0})
    t.flush()
    t.log_metrics(1, {"loss": 0.5})
    t.flush()
    t.end("FINISHED")
    assert t.rejected == 1 and "refused 1 metric values for good" in caplog.text
    assert [(m.step, m.value) for m in MlflowClient(store).get_metric_history(run_id, "loss")] == [(1, 0.5)]
    assert Spill(tmp_path / "spill").read_metrics(run_id) == []  # nothing left that blocks later sends

"""Spill files, bounded retries, the null tracker, run tags and plots (no MLflow store)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from pathlib import Path

import pytest

from distmeta.tracking import (
    MetricRecord,
    NullTracker,
    RetryPolicy,
    Spill,
    Tracker,
    TrackingError,
    adaptation_curve,
    git_commit,
    git_dirty,
    retry,
    run_tags,
    training_curves,
)
from distmeta.tracking.retry import Retrier

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_spill_metrics_round_trip_per_run(tmp_path: Path) -> None:
    spill = Spill(tmp_path / "spill")
    a = [MetricRecord("loss", 0.5, 3, 1000), MetricRecord("acc", math.nan, 3, 1000)]
    b = [MetricRecord("loss", 0.25, 4, 2000)]
    assert spill.write_metrics("run-a", a) == 2
    spill.write_metrics("run-b", b)
    lines = [json.loads(x) for x in spill.metrics_path.read_text().splitlines()]
    assert lines[0] == {"key": "loss", "value": 0.5, "step": 3, "timestamp": 1000, "run_id": "run-a"}
    got = spill.read_metrics("run-a")
    assert got[0] == a[0] and got[1].key == "acc" and math.isnan(got[1].value)
    spill.drop_metrics("run-a")
    assert spill.read_metrics("run-a") == [] and spill.read_metrics("run-b") == b
    spill.drop_metrics("run-b")
    assert not spill.metrics_path.exists()


def test_spill_run_info_merges(tmp_path: Path) -> None:
    spill = Spill(tmp_path)
    spill.write_run_info("r", params={"a": "1"}, tags={"t": "x"})
    spill.write_run_info("r", params={"b": "2"}, artifacts=[{"local_path": "/c"}], status="FAILED")
    spill.write_run_info(None, params={"z": "9"})
    data = json.loads(spill.params_path.read_text())
    assert data["r"] == {"params": {"a": "1", "b": "2"}, "tags": {"t": "x"},
                         "artifacts": [{"local_path": "/c"}], "status": "FAILED"}
    assert data["<no-run>"] == {"params": {"z": "9"}}


class _Flaky:
    """Fails ``failures`` times with a transport-like error, then returns 'ok'."""

    def __init__(self, failures: int, error_code: str | None = None) -> None:
        self.failures, self.calls, self.error_code = failures, 0, error_code

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            exc = ConnectionError("connection refused")
            exc.error_code = self.error_code  # type: ignore[attr-defined]
            raise exc
        return "ok"


def test_retrier_retries_then_succeeds() -> None:
    retrier = Retrier(RetryPolicy(max_retries=3, backoff_s=0.01, max_wait_s=5))
    flaky = _Flaky(2)
    assert retrier.call("x", flaky) == "ok" and flaky.calls == 3


def test_retrier_gives_up_within_bound_and_cools_down() -> None:
    retrier = Retrier(RetryPolicy(max_retries=10, backoff_s=0.1, max_wait_s=0.5, cooldown_s=60))
    flaky = _Flaky(100)
    start = time.monotonic()
    with pytest.raises(TrackingError, match="'log metrics'") as info:
        retrier.call("log metrics", flaky)
    assert time.monotonic() - start < 1.0  # waits 0.1 + 0.2, then 0.4 would pass 0.5 s
    assert flaky.calls == 3 and not info.value.permanent and retrier.cooling_down
    with pytest.raises(TrackingError):
        retrier.call("log metrics", flaky, background=True)
    assert flaky.calls == 3  # skipped while cooling down
    assert retrier.call("flush", _Flaky(0)) == "ok" and not retrier.cooling_down


def test_retrier_probes_once_after_cooldown() -> None:
    retrier = Retrier(RetryPolicy(max_retries=3, backoff_s=0.01, max_wait_s=5, cooldown_s=0.05))
    flaky = _Flaky(100)
    with pytest.raises(TrackingError):
        retrier.call("log metrics", flaky)
    assert flaky.calls == 4
    time.sleep(0.06)
    with pytest.raises(TrackingError):
        retrier.call("log metrics", flaky, background=True)
    assert flaky.calls == 5  # one probe, no retry round, while the server stays down
    with pytest.raises(TrackingError):
        retrier.call("flush", flaky)
    assert flaky.calls == 9  # explicit calls still retry fully


def test_retrier_does_not_retry_rejections() -> None:
    retrier = Retrier(RetryPolicy(max_retries=5, backoff_s=0.01))
    flaky = _Flaky(1, error_code="INVALID_PARAMETER_VALUE")
    with pytest.raises(TrackingError) as info:
        retrier.call("log params", flaky)
    assert info.value.permanent and flaky.calls == 1 and not retrier.cooling_down


def test_configure_http_makes_mlflow_fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "_owned_env", set())
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "42")  # the user's choice is kept
    retry.configure_http(RetryPolicy(timeout_s=2.5))
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "42"
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT")
    retry.configure_http(RetryPolicy(timeout_s=2.5))
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"  # whole seconds, rounded up


def test_retry_policy_rejects_negative_values() -> None:
    with pytest.raises(ValueError, match="max_wait_s"):
        RetryPolicy(max_wait_s=-1)


def test_null_tracker_records_nothing(tmp_path: Path) -> None:
    tracker = NullTracker()
    assert isinstance(tracker, Tracker)
    assert tracker.start("r", {"a": {"b": 1}}, {}) is None and tracker.run_id is None
    tracker.log_metrics(0, {"loss": 1.0})
    tracker.log_artifact(str(tmp_path))
    tracker.log_dict({"a": 1}, "x.json")
    tracker.flush()
    tracker.end("FAILED")
    with pytest.raises(ValueError, match="'DONE'"):
        tracker.end("DONE")
    assert list(tmp_path.iterdir()) == []


def test_run_tags_in_and_out_of_a_git_repo(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True, check=False)
    tags = run_tags(nodes=2, workers=8, run_dir=tmp_path, extra={"team": "meta"})
    assert tags["distmeta.version"] == "0.1.0"
    assert tags["distmeta.nodes"] == "2" and tags["distmeta.workers"] == "8"
    assert tags["distmeta.run_dir"] == str(tmp_path.resolve()) and tags["team"] == "meta"
    if head.returncode == 0:
        assert tags["mlflow.source.git.commit"] == head.stdout.strip()
    assert git_commit(tmp_path) is None
    assert "distmeta.git_commit" not in run_tags(repo_dir=tmp_path)


def test_run_tags_say_whether_the_code_differs_from_its_commit(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                       check=True, capture_output=True)

    assert git_dirty(tmp_path) is None
    git("init", "-q")
    (tmp_path / "train.py").write_text("lr = 0.1\n")
    git("add", "train.py")
    git("commit", "-qm", "first")
    assert run_tags(repo_dir=tmp_path)["distmeta.git_dirty"] == "false"
    (tmp_path / "notes.txt").write_text("untracked files do not count\n")
    assert git_dirty(tmp_path) is False
    (tmp_path / "train.py").write_text("lr = 0.2\n")
    tags = run_tags(repo_dir=tmp_path)
    assert tags["distmeta.git_dirty"] == "true" and tags["distmeta.git_commit"] == git_commit(tmp_path)


def test_plots_write_pngs(tmp_path: Path) -> None:
    history = {"train/query_loss": [(s, 1.0 / (s + 1)) for s in range(0, 100, 10)],
               "train/query_acc": [(0, 0.2), (10, 0.5)]}
    curves = training_curves(history, tmp_path / "plots" / "curves.png", title="maml")
    adapt = adaptation_curve([0, 1, 5, 10], [0.2, 0.5, 0.7, 0.72], [0.02, 0.03, 0.02, 0.02],
                             tmp_path / "adapt.png", ylabel="query accuracy")
    for path in (curves, adapt):
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000
    import matplotlib.image

    assert matplotlib.image.imread(curves).shape[1] > matplotlib.image.imread(adapt).shape[1]
    with pytest.raises(ValueError, match="4/3/4"):
        adaptation_curve([0, 1, 2, 3], [0.1, 0.2, 0.3], [0.1] * 4, tmp_path / "x.png", "acc")
    with pytest.raises(ValueError, match="'empty'"):
        training_curves({"empty": []}, tmp_path / "y.png")


def test_commit_from_the_environment_when_there_is_no_git(tmp_path, monkeypatch):
    from distmeta.tracking.tags import git_commit, run_tags

    monkeypatch.setenv("DISTMETA_GIT_COMMIT", "abc123")
    assert git_commit(tmp_path) == "abc123"  # tmp_path is not a work tree
    tags = run_tags(run_dir="s3://bucket/runs/r1", repo_dir=tmp_path)
    assert tags["mlflow.source.git.commit"] == "abc123"
    assert tags["distmeta.run_dir"] == "s3://bucket/runs/r1"  # a URI stays as given


def test_a_submitted_job_is_a_job_source_with_its_submission_id(monkeypatch):
    import json

    from distmeta.tracking.tags import ray_job, source_tags

    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"metadata": {"job_submission_id": "raysubmit_x"}}))
    assert ray_job()["ray.job_submission_id"] == "raysubmit_x"
    tags = source_tags(["/usr/bin/distmeta", "train", "configs/a.yaml", "outer.lr=1e-3"])
    assert tags["mlflow.source.type"] == "JOB" and tags["distmeta.command"] == "distmeta train configs/a.yaml outer.lr=1e-3"


def test_a_packed_dataset_is_described_by_its_manifest(tmp_path):
    from distmeta.config import load_config
    from distmeta.data import ShardLayout, pack_procedural
    from distmeta.tasks import Sinusoid
    from distmeta.tasks.sources import dataset_input

    data = tmp_path / "sine"
    pack_procedural(Sinusoid(shots=10, query=10), str(data), {"train": 40, "test": 20}, layout=ShardLayout(maxcount=10))
    info = dataset_input(load_config(None, [f"data.path={data}"]))
    assert info["name"] == "sine" and info["source"] == str(data) and info["source_type"] == "local"
    assert info["profile"]["episodes"] == {"test": 20, "train": 40} and info["profile"]["files"] == 6
    (data / "train-000000.tar").write_bytes(b"changed")  # the digest follows the manifest, not the files
    assert dataset_input(load_config(None, [f"data.path={data}"]))["digest"] == info["digest"]
    other = tmp_path / "other"
    pack_procedural(Sinusoid(shots=10, query=10), str(other), {"train": 30}, layout=ShardLayout(maxcount=10))
    assert dataset_input(load_config(None, [f"data.path={other}"]))["digest"] != info["digest"]

"""Training runs recorded in MLflow: a real local store and a real ``mlflow server`` on
127.0.0.1 that goes away mid-run; resume continues the same MLflow run; ``distmeta eval``."""

import json

import pytest
import ray
import yaml
from mlflow import MlflowClient
from mlflow_server import MlflowServer

from distmeta.config import load_config
from distmeta.runtime.cluster import connect
from distmeta.runtime.run import Callbacks, evaluate_target, train
from distmeta.tracking import RetryPolicy, TrackerOptions
from distmeta.tracking import run as tracking_run

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

BASE = ["model.hidden=[16,16]", "runtime.meta_batch=8", "runtime.logical_shards=4", "runtime.workers=2",
        "outer.steps=6", "checkpoint.every=3", "tracking.log_every=2", "tracking.system_metrics=false",
        "algorithm.inner_lr=0.02", "eval.episodes=50", "eval.steps=3"]


@pytest.fixture(scope="module")
def ray_session():
    connect(num_cpus=2, object_store_mb=200, dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{root}/mlflow.db"
    result = train(load_config(None, [*BASE, f"tracking.uri={uri}", "name=tracked"]), run_dir=str(root / "run"))
    return result, uri


def metric_history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def artifact_paths(client, run_id, path=None):
    out = []
    for item in client.list_artifacts(run_id, path):
        out += artifact_paths(client, run_id, item.path) if item.is_dir else [item.path]
    return out


def test_params_metrics_tags_and_artifacts_read_back(local_run):
    result, uri = local_run
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["algorithm.name"] == "maml" and float(params["algorithm.inner_lr"]) == 0.02
    assert params["model.hidden"] == "[16, 16]" and params["runtime.workers"] == "2"
    assert run.data.tags["distmeta.workers"] == "2" and run.data.tags["distmeta.run_dir"] == result.run_dir
    logged = metric_history(client, result.run_id, "train/query_loss")
    expected = [(s, m["query_loss"]) for s, m in result.history if s % 2 == 0 or s == 5]
    assert [s for s, _ in logged] == [s for s, _ in expected]
    assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)
    for key in ("train/grad_norm", "train/tasks_per_s", "train/compute_s", "train/server_s", "train/retries",
                "train/query_loss_before", "train/skipped_steps"):
        assert metric_history(client, result.run_id, key), key
    ev = result.evaluation
    assert run.data.metrics["eval/test/query_loss_post"] == pytest.approx(ev.post)
    assert run.data.metrics["eval/test/query_loss_pre"] == pytest.approx(ev.pre)
    assert [m.step for m in client.get_metric_history(result.run_id, "eval/test/query_loss_post")] == [6]
    files = artifact_paths(client, result.run_id)
    for name in ("config.yaml", "checkpoints/final.pt", "plots/training_curves.png",
                 "plots/adaptation_test.png", "eval/test_table.json"):
        assert name in files, files
    config = yaml.safe_load(open(client.download_artifacts(result.run_id, "config.yaml")))
    assert config["algorithm"]["inner_lr"] == 0.02


def test_eval_command_reports_adaptation_with_confidence_intervals_in_a_child_run(local_run):
    result, uri = local_run
    client = MlflowClient(tracking_uri=uri)
    before = client.get_run(result.run_id)
    report = evaluate_target(result.run_dir, steps=5, episodes=100)
    assert report.episodes == 100 and report.steps == [0, 1, 2, 3, 4, 5]
    assert report.post < report.pre
    assert all(ci > 0 for ci in report.loss_ci95)
    after = client.get_run(result.run_id)  # the training run is not re-opened
    assert after.info.end_time == before.info.end_time and after.data.tags == before.data.tags
    children = client.search_runs([before.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert len(children) == 1
    child = children[0]
    assert child.data.metrics["eval/test/query_loss_post"] == pytest.approx(report.post)
    assert [m.step for m in client.get_metric_history(child.info.run_id, "eval/test/query_loss_post")] == [6]
    curve = sorted(client.get_metric_history(child.info.run_id, "eval/test/curve/query_loss"), key=lambda m: m.step)
    assert [m.step for m in curve] == [0, 1, 2, 3, 4, 5]
    assert [m.value for m in curve] == pytest.approx(report.loss)


def test_runs_carry_user_source_command_and_ray_job(local_run):
    result, uri = local_run
    tags = MlflowClient(tracking_uri=uri).get_run(result.run_id).data.tags
    for key in ("mlflow.user", "mlflow.source.name", "mlflow.source.type", "distmeta.command", "ray.job_id"):
        assert tags.get(key), key
    assert tags["mlflow.source.type"] == "LOCAL"
    inputs = MlflowClient(tracking_uri=uri).get_run(result.run_id).inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.name == "sinusoid" and len(inputs[0].dataset.digest) > 8
    assert inputs[0].tags[0].value == "training"


def test_resume_continues_the_same_mlflow_run(ray_session, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_dir = str(tmp_path / "run")
    first = train(load_config(None, [*BASE, f"tracking.uri={uri}"]), run_dir=run_dir, until_step=3,
                  evaluate_at_end=False)
    second = train(resume=run_dir)
    assert first.run_id and second.run_id == first.run_id
    client = MlflowClient(tracking_uri=uri)
    assert [s for s, _ in metric_history(client, first.run_id, "train/query_loss")] == [0, 2, 4, 5]
    assert len(client.search_runs([client.get_run(first.run_id).info.experiment_id])) == 1


def short_waits(**options):
    """The tracker's options with the default retries (4 attempts per call) but 50 ms instead of
    500 ms before the first retry: a dead server still fails every call for good, in 0.35 s
    instead of 3.5 s (several calls at the end of the run: the artifacts, the flush, the end)."""
    return TrackerOptions(retry=RetryPolicy(backoff_s=0.05), **options)


def test_tracking_server_that_dies_mid_run(ray_session, tmp_path, monkeypatch):
    monkeypatch.setattr(tracking_run, "TrackerOptions", short_waits)
    server = MlflowServer(tmp_path / "server")
    (tmp_path / "server").mkdir()
    server.start()
    try:
        cfg = load_config(None, [*BASE, f"tracking.uri={server.uri}", "outer.steps=8", "runtime.workers=1"])
        live = train(cfg, run_dir=str(tmp_path / "live"), evaluate_at_end=False)
        client = MlflowClient(tracking_uri=server.uri)
        assert [s for s, _ in metric_history(client, live.run_id, "train/query_loss")] == [0, 2, 4, 6, 7]

        def stop_server(step, metrics):
            if step == 3:
                server.stop()

        dead_dir = f"file://{tmp_path}/dead"  # a URI run dir: the spill files live in it all the same
        dead = train(cfg, run_dir=dead_dir, callbacks=Callbacks(on_step=stop_server), evaluate_at_end=False)
        assert dead.step == 8
        spill_files = [tmp_path / "dead" / "tracking" / "unsent_metrics.jsonl",  # then the parts appended to it
                       *sorted((tmp_path / "dead" / "tracking").glob("unsent_metrics.jsonl.part-*"))]
        lines = [line for f in spill_files for line in f.read_text().splitlines()]
        spilled = {r["step"]: r["value"] for r in map(json.loads, lines) if r["key"] == "train/query_loss"}
        server.start()  # back up, to read what reached it before it went away
        client = MlflowClient(tracking_uri=server.uri)
        sent = dict(metric_history(client, dead.run_id, "train/query_loss"))
        assert {4, 6, 7} <= set(spilled)  # logged after the server stopped: kept in the run directory
        assert sorted(set(sent) | set(spilled)) == [0, 2, 4, 6, 7]  # nothing lost
        by_step = dict(dead.history)
        for step, value in (sent | spilled).items():
            assert value == pytest.approx(by_step[step]["query_loss"])
        again = train(resume=dead_dir, evaluate_at_end=False)  # resuming re-sends what was spilled
        assert again.run_id == dead.run_id
        assert [s for s, _ in metric_history(client, dead.run_id, "train/query_loss")] == [0, 2, 4, 6, 7]
        assert not list((tmp_path / "dead" / "tracking").glob("unsent_metrics.jsonl*"))
    finally:
        server.stop()


def test_the_logged_model_adapts_and_predicts_with_the_eval_commands_score(local_run, monkeypatch):
    """The pyfunc adapts on each support set and predicts the query set; on the held-out
    episodes its error equals ``distmeta eval``'s at the same inner step."""
    import mlflow
    import numpy as np

    from distmeta.tasks.sources import evaluation_batches

    result, uri = local_run
    assert result.model_uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = mlflow.pyfunc.load_model(result.model_uri)
    assert {s.name for s in model.metadata.get_input_schema().inputs} == {"support_x", "support_y", "query_x"}
    report = evaluate_target(result.run_dir, steps=3, episodes=50, track=False)
    errors = []
    for batch in evaluation_batches(result.config, None, 50):
        pred = model.predict({"support_x": batch.support_x.numpy(), "support_y": batch.support_y.numpy(),
                              "query_x": batch.query_x.numpy()}, params={"inner_steps": 3})
        errors.append(((pred - batch.query_y.numpy()) ** 2).mean(axis=(1, 2)))
    assert float(np.concatenate(errors).mean()) == pytest.approx(report.loss[3], rel=1e-5)


def test_compare_plots_a_metric_of_runs_from_their_mlflow_runs(local_run, tmp_path, capsys):
    from distmeta.cli import main

    result, _ = local_run
    out = tmp_path / "curves.png"
    assert main(["compare", result.run_dir, "--metric", "query_loss", "--out", str(out)]) == 0
    last = [m["query_loss"] for s, m in result.history if s == 5][0]
    assert out.read_bytes()[:4] == b"\x89PNG" and f"query_loss {last:.4g} at step 5" in capsys.readouterr().out
    assert main(["compare", result.run_dir, "--metric", "nonsense", "--out", str(out)]) == 2

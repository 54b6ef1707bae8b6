"""``distmeta sweep`` on a real local Ray (Tune) and a real MLflow store: 4 sinusoid trials of
1 worker each (2 at a time), ASHA stops the laggards, nested runs, the summary and the best
config; the same command again continues the finished sweep instead of starting over."""

import json

import pytest
from mlflow import MlflowClient

from distmeta.config import load_config
from distmeta.runtime.cluster import connect
from distmeta.runtime.sweep import SweepOptions, parse_grid, run_sweep

pytestmark = [pytest.mark.ray, pytest.mark.timeout(400)]


# Two trials at a time. ASHA still meets the laggards after the good learning rate's trials:
# the grid starts with outer.lr=0.003 (trials 0 and 1); a 1e-5 trial starts only when one of them
# has ended, so it reaches the first rung after a 0.003 trial has reported there; and a trial that
# reports a rung first is never stopped at it, so a 0.003 trial still runs to the end.
OPTIONS = SweepOptions(eval_every=20, eval_episodes=50, max_concurrent=2)


@pytest.fixture
def ray_session():
    """One local Ray for both sweeps of the test (each would start and stop one of its own),
    with 4 logical CPUs: room for two trials (0.01 + 1 CPU each) at once on 2 cores."""
    import ray

    connect(num_cpus=4, dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_a_sweep_of_four_trials_stops_laggards_and_nests_its_runs(ray_session, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    base = load_config("configs/sinusoid_maml.yaml", ["outer.steps=60", "runtime.workers=1", "tracking.log_model=false",
                                                      "tracking.system_metrics=false", f"tracking.uri={uri}"])
    grid = ["outer.lr=0.003,0.00001", "algorithm.inner_lr=0.01,0.02"]
    result = run_sweep(base, grid, str(tmp_path / "sweep"), OPTIONS)
    status = {r["outer.lr"]: set() for r in result.rows}
    for r in result.rows:
        status[r["outer.lr"]].add(r["status"])
    assert len(result.rows) == 4 and not any(r["error"] for r in result.rows)
    assert "FINISHED" in status[0.003]  # the good learning rate runs to the end
    assert "STOPPED" in status[0.00001]  # ASHA stops a trial that learns nothing
    best = load_config(tmp_path / "sweep" / "best_config.yaml")
    assert best.outer.lr == 0.003
    assert len(json.loads((tmp_path / "sweep" / "summary.json").read_text())) == 4

    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and "best_val_query_loss" in parent.data.metrics
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert len(children) == 4
    by_dir = {c.data.tags["distmeta.run_dir"].rsplit("/", 1)[-1]: c.info.status for c in children}
    for r in result.rows:
        assert by_dir[r["trial"]] == ("FINISHED" if r["status"] == "FINISHED" else "KILLED"), (r, by_dir)

    again = run_sweep(base, grid, str(tmp_path / "sweep"), OPTIONS)
    assert again.parent_run_id == result.parent_run_id
    assert sorted((r["trial"], r["status"]) for r in again.rows) == sorted((r["trial"], r["status"]) for r in result.rows)


def test_grid_values_are_checked_against_the_config():
    base = load_config("configs/sinusoid_maml.yaml").to_dict()
    assert parse_grid(["algorithm.inner_lr=1e-3,0.1"], base) == {"algorithm.inner_lr": [0.001, 0.1]}
    with pytest.raises(ValueError, match="algorithm.inner_lrr"):
        parse_grid(["algorithm.inner_lrr=0.1"], base)
    with pytest.raises(ValueError, match="expected key=value1,value2"):
        parse_grid(["outer.lr"], base)

"""The training history: bounded in memory, every logged step in the run directory."""

import tracemalloc

import pytest

from distmeta.rundir import layout
from distmeta.rundir.metrics import KEEP, PART_LINES, History, read_metrics
from distmeta.rundir.storage import RunDir


def metrics(step):
    return {"query_loss": 1.0 / (step + 1), "step_s": 0.01, "grad_norm": float(step)}


def test_points_in_memory_stay_bounded_and_span_the_run():
    h = History(keep=64)
    for step in range(10_000):
        h.add(step, metrics(step), logged=step % 10 == 0 or step == 9_999)
    points = h.curve_points()
    assert 32 <= len(points) <= 65 and points[0][0] == 0 and points[-1][0] == 9_999
    gaps = {b[0] - a[0] for a, b in zip(points[:-2], points[1:-1], strict=True)}
    assert len(gaps) == 1, "kept points are evenly spaced"
    assert len(h) == 10_000 and h.tasks_per_s(meta_batch=8) == pytest.approx(8 / 0.01)


def test_memory_after_100k_steps_is_that_after_1k(tmp_path):
    def held(steps):
        rd = RunDir(str(tmp_path / f"run{steps}"))
        rd.makedirs()
        tracemalloc.start()
        h = History(rd)
        for step in range(steps):
            h.add(step, metrics(step))
        current = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        h.close()
        return current

    small, large = held(1_000), held(100_000)
    assert large < 2 * small + 200_000, (small, large)


def test_every_logged_step_is_in_the_run_dir_and_a_resume_logs_again(tmp_path):
    rd = RunDir(str(tmp_path / "run"))
    rd.makedirs()
    h = History(rd)
    for step in range(7):
        h.add(step, metrics(step), logged=step % 2 == 0 or step == 6)
    h.close()
    again = History(rd)  # resumed from the checkpoint of step 4
    again.add(4, metrics(4) | {"query_loss": -1.0})
    again.close()
    steps = read_metrics(rd)
    assert [s for s, _ in steps] == [0, 2, 4, 6] and dict(steps)[4]["query_loss"] == -1.0


def test_on_a_uri_the_metrics_are_written_as_parts(tmp_path, monkeypatch):
    import distmeta.rundir.metrics as m

    monkeypatch.setattr(m, "PART_LINES", 10)  # the module constant the writer reads
    rd = RunDir((tmp_path / "store").as_uri())
    h = History(rd)
    for step in range(25):
        h.add(step, metrics(step))
    assert rd.list(layout.METRICS_PARTS) == ["part-000001.jsonl", "part-000002.jsonl"]
    h.close()
    assert len(rd.list(layout.METRICS_PARTS)) == 3 and [s for s, _ in read_metrics(rd)] == list(range(25))
    assert KEEP >= 1024 and PART_LINES >= 1000

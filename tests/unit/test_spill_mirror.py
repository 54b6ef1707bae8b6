"""The spill of a run directory on a URI: appended as parts, rebuilt on resume, staging removed."""

import json

from distmeta.rundir import layout
from distmeta.rundir.storage import RunDir
from distmeta.tracking.mirror import MAX_PARTS, SpillMirror
from distmeta.tracking.spill import MetricRecord, Spill


def test_a_growing_spill_uploads_only_its_new_bytes_and_a_resume_rebuilds_it(tmp_path):
    rd = RunDir((tmp_path / "store").as_uri())
    local = tmp_path / "staging"
    mirror, spill = SpillMirror(rd, local), Spill(local)
    written = []
    for step in range(5):
        spill.write_metrics("run1", [MetricRecord("train/loss", float(step), step, 0)])
        mirror.sync()
        names = rd.list(layout.SPILL)
        written.append(sum(len(rd.read_bytes(f"{layout.SPILL}/{n}")) for n in names))
    sizes = [b - a for a, b in zip([0, *written], written, strict=False)]
    assert len(set(sizes)) == 1, "each sync uploads one line's bytes, not the whole file"
    assert rd.list(layout.SPILL) == [layout.SPILLED_METRICS] + [f"{layout.SPILLED_METRICS}.part-{i:06d}" for i in
                                                                range(1, 5)]
    again = tmp_path / "staging2"
    SpillMirror(rd, again)
    assert (again / layout.SPILLED_METRICS).read_bytes() == (local / layout.SPILLED_METRICS).read_bytes()


def test_a_rewritten_spill_is_uploaded_whole_and_its_parts_removed(tmp_path):
    rd = RunDir((tmp_path / "store").as_uri())
    local = tmp_path / "staging"
    mirror, spill = SpillMirror(rd, local), Spill(local)
    for step in range(MAX_PARTS + 3):
        spill.write_metrics("run1", [MetricRecord("train/loss", float(step), step, 0)])
        mirror.sync()
    assert len(rd.list(layout.SPILL)) <= MAX_PARTS + 1
    spill.write_metrics("run2", [MetricRecord("train/loss", 1.0, 0, 0)])
    mirror.sync()
    spill.drop_metrics("run1")  # sent: the file is rewritten with run2's line, then grows again
    spill.write_metrics("run2", [MetricRecord("train/loss", 2.0, 1, 0)])
    mirror.sync()
    assert rd.list(layout.SPILL) == [layout.SPILLED_METRICS]
    assert rd.read_bytes(f"{layout.SPILL}/{layout.SPILLED_METRICS}") == (local / layout.SPILLED_METRICS).read_bytes()
    spill.drop_metrics("run2")
    mirror.sync()
    assert rd.list(layout.SPILL) == []
    mirror.remove_staging()
    assert not local.exists()


def test_staging_that_holds_unsent_artifacts_is_kept(tmp_path):
    rd = RunDir((tmp_path / "store").as_uri())
    local = tmp_path / "staging"
    mirror = SpillMirror(rd, local)
    (local / layout.SPILLED_PARAMS).write_text(json.dumps({"run1": {"artifacts": [{"local_path": "x"}]}}))
    mirror.sync()
    mirror.remove_staging()
    assert local.exists() and rd.exists(f"{layout.SPILL}/{layout.SPILLED_PARAMS}")

"""Run directories through pyarrow.fs, and the representation diagnostic."""

import numpy as np
import pytest
import torch

from distmeta.config import load_config
from distmeta.evaluation import diagnostics as representation_diagnostics
from distmeta.rundir.checkpoint import checkpoint_steps, load_checkpoint, save_checkpoint
from distmeta.rundir.storage import RunDir
from distmeta.tasks import LinearRepresentation


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_run_dir_on_a_filesystem_uri(tmp_path, scheme):
    rd = RunDir(f"{scheme}{tmp_path}/run")
    rd.write_text("config.yaml", "a: 1\n")
    assert rd.read_text("config.yaml") == "a: 1\n"
    assert rd.list("") == ["config.yaml"]
    for step in (1, 2, 3):
        save_checkpoint(rd, {"step": step, "params": {"w": torch.full((2,), float(step))}}, keep=2)
    assert checkpoint_steps(rd) == [2, 3]
    assert load_checkpoint(rd)["params"]["w"].tolist() == [3.0, 3.0]
    assert not [p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    with pytest.raises(FileNotFoundError, match="nothing.txt"):
        rd.read_text("nothing.txt")


def test_unknown_filesystem_scheme_is_named():
    with pytest.raises(ValueError, match="nosuchfs://x"):
        RunDir("nosuchfs://x/run")


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    rd = RunDir(str(tmp_path))
    rd.makedirs("checkpoints")
    import pickle

    (tmp_path / "checkpoints" / "step-00000001.pt").write_bytes(pickle.dumps({"step": 1, "evil": object()}))
    with pytest.raises(ValueError, match="step-00000001.pt cannot be read"):
        load_checkpoint(rd)


def test_principal_angle_distance_diagnostic():
    cfg = load_config(None, ["task.family=linear_rep", "task.d=8", "task.k=2", "model.name=linear_rep",
                             "model.d=8", "model.k=2"])
    diagnose = representation_diagnostics(cfg)
    b_star = LinearRepresentation(d=8, k=2).b_star
    exact = {"body.weight": torch.from_numpy(b_star.T.copy()).float(), "head.weight": torch.ones(1, 2)}
    assert diagnose(exact)["principal_angle_distance"] < 1e-6
    rng = np.random.default_rng(0)
    other = {"body.weight": torch.from_numpy(rng.standard_normal((2, 8))).float(), "head.weight": torch.ones(1, 2)}
    assert diagnose(other)["principal_angle_distance"] > 0.3
    assert representation_diagnostics(load_config(None, [])) is None

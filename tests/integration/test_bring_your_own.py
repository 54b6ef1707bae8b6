"""A user's own package (tests/userpkg.py, written outside the repository) trains on a real
local Ray: through `distmeta train` with its model, task family, loss, rule and a torch.optim
optimiser named by import path, and through `distmeta.fit` with objects. The Ray workers
get no PYTHONPATH and run elsewhere than the package: the code reaches them only through the
runtime env (the import trace shows where each process imported it from). Then `distmeta
eval`, `distmeta export`, `distmeta.load_model` and the logged MLflow model, loaded where
distmeta is not installed, all use it; 1 and 2 workers give the same bits."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from userpkg import forget_package, write_project

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
DISTMETA = str(Path(sys.executable).with_name("distmeta"))


def clean_env(**env: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | env


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The package, and runs of it on 2 workers and on 1, trained from another folder: both at
    once, each on a local Ray of its own; the 2-worker run tracked in MLflow at ``uri``, the
    1-worker run (only its parameters are compared) not tracked."""
    root = tmp_path_factory.mktemp("byo")
    project, elsewhere = write_project(root / "project"), root / "elsewhere"
    elsewhere.mkdir()
    uri = f"sqlite:///{root}/mlflow.db"
    procs = {}
    try:
        for workers, extra in ((2, [f"tracking.uri={uri}"]), (1, ["tracking.enabled=false", "--no-eval"])):
            procs[workers] = subprocess.Popen(
                [DISTMETA, "train", str(project / "config.yaml"), "--run-dir", str(root / f"run{workers}"),
                 f"runtime.workers={workers}", "runtime.dashboard=false", *extra],
                cwd=elsewhere, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                start_new_session=True)
        for proc in procs.values():
            out, _ = proc.communicate(timeout=240)
            assert proc.returncode == 0, out[-6000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return root, project, elsewhere, uri


def test_the_workers_import_the_users_code_from_the_runtime_env(trained):
    root, project, _, _ = trained
    lines = [line.split(" ", 1) for line in (project / "trace").read_text().splitlines()]
    shipped = {pid for pid, path in lines if not path.startswith(str(project))}
    assert len(shipped) >= 3  # the server and 2 workers of the 2-worker run, at least
    assert all("runtime_resources" in path for pid, path in lines if pid in shipped)
    assert json.loads((root / "run2" / "code.json").read_text()) == {"import_from": [str(project)]}


def test_one_and_two_workers_give_the_same_bits_buffers_included(trained):
    import distmeta

    root = trained[0]
    one, two = distmeta.load_model(str(root / "run1")), distmeta.load_model(str(root / "run2"))
    assert type(two.model).__name__ == "Net" and type(two.rule).__name__ == "DecayingMAML"
    state1, state2 = one.model.state_dict(), two.model.state_dict()
    assert "scale" in state2 and set(state1) == set(state2)
    assert all(torch.equal(state1[k], state2[k]) for k in state2)
    assert not any(n.endswith(("running_mean", "running_var")) for n in state2)  # made functional, said in the log


def test_eval_export_and_the_logged_model_use_the_users_code(trained):
    root, _, elsewhere, uri = trained
    out = run([DISTMETA, "eval", str(root / "run2"), "--episodes", "10", "--no-track"], elsewhere).stdout
    assert "query loss" in out
    run([DISTMETA, "export", str(root / "run2"), "--out", str(root / "exported")], elsewhere)
    from safetensors.torch import load_file

    assert {"out.weight", "features.0.weight", "scale"} <= set(load_file(str(root / "exported" / "model.safetensors")))
    logged = [line.split()[-1] for line in (root / "run2" / "train.log").read_text().splitlines()
              if "logged the model" in line]
    assert logged and logged[0].startswith("models:/")
    site = next(p for p in sys.path if p.endswith("site-packages"))
    code = ("import sys, numpy as np, mlflow\n"
            "try:\n    import distmeta\n    sys.exit('distmeta is installed here')\nexcept ImportError:\n    pass\n"
            f"m = mlflow.pyfunc.load_model({logged[0]!r})\n"
            "x = np.linspace(-1, 1, 10, dtype='float32').reshape(2, 5, 1)\n"
            "print(m.predict({'support_x': x, 'support_y': 2 * x, 'query_x': x}).shape)\n")
    # -S: no site hooks, so the editable distmeta of this environment is not importable; the
    # model's own code (distmeta's and the package's, shipped with it) is all there is
    shown = run([sys.executable, "-S", "-c", code], root, PYTHONPATH=site, MLFLOW_TRACKING_URI=uri).stdout
    assert shown.strip().endswith("(2, 5, 1)")


def test_fit_takes_objects(tmp_path, monkeypatch):
    import distmeta

    forget_package()
    project = write_project(tmp_path / "project")
    monkeypatch.syspath_prepend(str(project))
    from mypkg.nets import Net
    from mypkg.rules import DecayingMAML
    from mypkg.tasks import Lines

    torch.manual_seed(0)
    config = {"outer": {"steps": 6, "lr": 0.01}, "runtime": {"meta_batch": 4, "logical_shards": 2, "workers": 2},
              "model": {"head": "out"}, "eval": {"episodes": 8},
              "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "system_metrics": False}}
    result = distmeta.fit(config, model=Net(hidden=8), task=Lines(), rule=DecayingMAML(inner_lr=0.1, adapt="head"),
                          run_dir=str(tmp_path / "run"))
    assert result.step == 6 and result.run_id and Path(result.run_dir) == tmp_path / "run"
    assert set(result.params) >= {"out.weight", "features.1.weight"}
    assert all(bool(torch.isfinite(v).all()) for v in result.params.values())
    assert np.isfinite(result.evaluation.post)
    forget_package()


def test_readme_bring_your_own_runs_as_written(tmp_path):
    """README's files, written where it says, and its commands and Python, run as printed."""
    text = (Path(__file__).parents[2] / "README.md").read_text()
    section = text.split("## Bring your own", 1)[1].split("\n## ", 1)[0]
    files = re.findall(r"`([\w./-]+\.(?:py|yaml))`[^`\n]*:\n\n```\w*\n(.*?)```", section, re.S)
    assert [name for name, _ in files] == ["mypkg/nets.py", "mine.yaml"]
    for name, body in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    commands = [line.split("#")[0].split() for block in re.findall(r"```bash\n(.*?)```", section, re.S)
                for line in block.splitlines() if line.startswith("distmeta ")]
    assert [c[1] for c in commands] == ["train", "export"]
    for command in commands:
        run([DISTMETA, *command[1:]], tmp_path)
    assert (tmp_path / "exported" / "model.safetensors").is_file()
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "distmeta.fit" in b]
    printed = run([sys.executable, "-c", code], tmp_path).stdout.split()
    assert len(printed) == 3 and printed[1] == "Net" and float(printed[2]) > 0

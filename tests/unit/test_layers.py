"""The house's layers (pyproject.toml ``[tool.importlinter]``): no import runs back up, Ray only
in ``runtime``, MLflow only in ``tracking``, webdataset only in ``data``. import-linter checks
every import, function-local ones included."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = str(Path(sys.executable).with_name("lint-imports"))


def lint(package_parent: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([LINT, "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=package_parent,
                          env=env, capture_output=True, text=True, timeout=120)


def test_every_contract_is_kept():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("models/base.py", "import distmeta.runtime.run", "Layers"),
    ("tracking/plots.py", "import ray", "Ray only in distmeta.runtime"),
    ("tasks/images.py", "import mlflow", "MLflow only in distmeta.tracking"),
])
def test_an_import_that_breaks_a_contract_fails_it(tmp_path, module, line, contract):
    shutil.copytree(ROOT / "distmeta", tmp_path / "distmeta", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "distmeta" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert f"{contract}" in result.stdout and "BROKEN" in result.stdout

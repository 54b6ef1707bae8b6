"""distmeta installs beside research code: a wheel built from the repository declares
compatible ranges (the tested versions are pinned in constraints.txt, and satisfy them), an
SPDX license with its file, no benchmark code; building it warns about nothing deprecated;
it installs into a fresh virtual environment, where `distmeta --version` answers."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
                           capture_output=True, text=True, timeout=240)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    (path,) = out.glob("distmeta-*.whl")
    return path, build.stdout + build.stderr


def test_the_wheel_declares_ranges_a_license_and_no_benchmarks(wheel):
    path, log = wheel
    assert "Deprecat" not in log, [line for line in log.splitlines() if "Deprecat" in line]
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert not [n for n in names if n.startswith("benchmarks/")] and "distmeta/data/splits/cifar-fs-train.json" in names
    assert any(n.endswith("licenses/LICENSE") for n in names) and "License-Expression: Apache-2.0" in meta
    requires = [Requirement(line.split(":", 1)[1].strip()) for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    core = [r for r in requires if r.marker is None]
    assert core and not [str(r) for r in core if any(s.operator == "==" for s in r.specifier)]
    assert {"tune", "dev"} <= {line.split(":", 1)[1].strip() for line in meta.splitlines()
                               if line.startswith("Provides-Extra:")}
    pins = {line.split("==")[0].lower().replace("_", "-"): line.split("==")[1]
            for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line}
    for r in core:
        assert r.name.lower() in pins, f"constraints.txt does not pin {r.name}"
        assert r.specifier.contains(pins[r.name.lower()], prereleases=True), f"{r.name}=={pins[r.name.lower()]} vs {r}"


def test_it_installs_into_a_fresh_environment_and_answers_its_version(wheel, tmp_path):
    path, _ = wheel
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    install = subprocess.run([str(env / "bin" / "pip"), "install", "--quiet", "--no-deps", str(path)],
                             capture_output=True, text=True, timeout=240)
    assert install.returncode == 0, install.stderr[-2000:]
    version = subprocess.run([str(env / "bin" / "distmeta"), "--version"], capture_output=True, text=True, timeout=60,
                             cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"distmeta {path.name.split('-')[1]}"

"""The command line: config errors are one clear line and a non-zero exit, no traceback."""

import subprocess
import sys

import pytest

CONFIG = "configs/sinusoid_maml.yaml"


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "distmeta.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@pytest.mark.parametrize("args,needle", [
    ((CONFIG, "algorithm.inner_lrr=0.1"), "algorithm.inner_lrr: unknown key"),
    ((CONFIG, "outer.lr=abc"), "outer.lr"),
    ((CONFIG, "algorithm.inner_steps=0"), "algorithm.inner_steps=0"),
    ((CONFIG, "algorithm.name=mammal"), "algorithm.name='mammal'"),
    (("missing.yaml",), "config file 'missing.yaml' does not exist"),
    ((CONFIG, "runtime.workers=9"), "runtime.workers=9 must be <= runtime.logical_shards"),
    ((CONFIG, "nonsense"), "expected key=value"),
])
def test_config_errors_are_one_line_without_traceback(args, needle, capsys):
    from distmeta.cli import main

    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1


def test_a_config_error_from_the_installed_command_has_no_traceback():
    proc = run("train", CONFIG, "algorithm.inner_lrr=0.1")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("distmeta: error: algorithm.inner_lrr: unknown key; valid keys: "
                                   "['adapt', 'chunk_size', 'inner_lr', 'inner_steps', 'vectorize']")
    assert "Traceback" not in proc.stdout


def test_resume_of_a_folder_that_is_not_a_run(tmp_path):
    proc = run("train", "--resume", str(tmp_path))
    assert proc.returncode == 2 and "no config.yaml" in proc.stderr


def test_every_config_in_configs_is_valid():
    from pathlib import Path

    from distmeta.config import load_config

    configs = sorted(Path("configs").glob("*.yaml"))
    assert configs
    for path in configs:
        load_config(path)

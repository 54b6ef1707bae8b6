"""``distmeta data pack | info | verify`` from the command line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

OMNIGLOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "omniglot"


def cli(*args):
    return subprocess.run([sys.executable, "-m", "distmeta.cli", *args], capture_output=True, text=True, timeout=300)


def test_pack_info_verify_a_procedural_pool(tmp_path):
    out = tmp_path / "sin"
    proc = cli("data", "pack", "sinusoid", "--out", str(out), "--train", "30", "--val", "0", "--test", "10",
               "--maxcount", "10", "--param", "shots=5", "--param", "query=7")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.glob("*.tar")) == ["test-000000.tar"] + [f"train-{i:06d}.tar" for i in range(3)]
    info = cli("data", "info", str(out), "--split", "train")
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["episodes"] == 30 and described["params"]["shots"] == 5
    assert cli("data", "verify", str(out)).returncode == 0
    tar = out / "train-000001.tar"
    tar.write_bytes(tar.read_bytes()[:-700])
    bad = cli("data", "verify", str(out))
    assert bad.returncode == 2 and "train-000001.tar" in bad.stderr and "Traceback" not in bad.stderr


def test_pack_rejects_a_bad_family_parameter(tmp_path):
    proc = cli("data", "pack", "sinusoid", "--out", str(tmp_path / "x"), "--param", "shotz=5")
    assert proc.returncode == 2 and "shotz" in proc.stderr


@pytest.mark.skipif(not OMNIGLOT.is_dir(), reason=f"Omniglot arrays not found at {OMNIGLOT}")
def test_pack_omniglot_subset(tmp_path):
    out = tmp_path / "omni"
    proc = cli("data", "pack", "omniglot", "--root", str(OMNIGLOT), "--out", str(out), "--limit-classes", "10",
               "--maxcount", "4")
    assert proc.returncode == 0, proc.stderr
    assert "test: 10 classes / 200 images" in proc.stdout
    described = json.loads(cli("data", "info", str(out), "--split", "test").stdout)
    assert described["classes"] == 10 and described["files"] == 3 and described["image_shape"] == [1, 28, 28]
    assert cli("data", "verify", str(out)).returncode == 0


def test_a_killed_repack_leaves_the_data_set_as_it_was(tmp_path):
    """The repack writes the next generation of files and switches the manifest last: killed
    half-way, the previous data set still verifies; the next pack removes the partial files."""
    import signal
    import time

    out = tmp_path / "sin"
    pack = ["data", "pack", "sinusoid", "--out", str(out), "--val", "0", "--test", "0", "--maxcount", "10"]
    assert cli(*pack, "--train", "40").returncode == 0
    before = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    proc = subprocess.Popen([sys.executable, "-m", "distmeta.cli", *pack, "--train", "200000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(out.glob("train-g1-*.tar"))) < 2:
            time.sleep(0.05)
        assert list(out.glob("train-g1-*.tar")), "the repack wrote nothing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert {p.name: p.read_bytes() for p in out.glob("train-0*.tar")} == before  # nothing it named was touched
    assert cli("data", "verify", str(out)).returncode == 0
    assert cli(*pack, "--train", "20").returncode == 0
    assert sorted(p.name for p in out.glob("*.tar")) == ["train-g1-000000.tar", "train-g1-000001.tar"]
    assert cli("data", "verify", str(out)).returncode == 0

"""Meta-Dataset end to end from the command line: official-format TFRecord sources packed with
``distmeta data pack meta-dataset``, Omniglot (../shared) with its alphabets and an image
folder as two more sources; 2 steps of fo-MAML through Ray on 2 workers with variable-way
variable-shot episodes, then the meta-test per source, in the run's log."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from imagesets import image_folder_tree
from mdsets import bilevel_source, flat_source

from distmeta.data import pack_image_folder, pack_omniglot

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
OMNIGLOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "omniglot"
CLI = [sys.executable, "-m", "distmeta.cli"]


@pytest.mark.skipif(not (OMNIGLOT / "omniglot28.npz").is_file(), reason=f"Omniglot arrays not found at {OMNIGLOT}")
def test_multi_source_training_from_packed_records(tmp_path):
    records = tmp_path / "records"
    flat_source(records, "aircraft", (8, 5, 6), images=(14, 30), size=32)
    bilevel_source(records, "omniglot_md", ([6, 7], [5], [6, 5]), size=32)
    packed = subprocess.run([*CLI, "data", "pack", "meta-dataset", "--root", str(records), "--source", "all",
                             "--out", str(tmp_path / "md"), "--image-size", "28"],
                            capture_output=True, text=True, timeout=120)
    assert packed.returncode == 0, packed.stderr
    assert "aircraft" in packed.stdout and "train: 8 classes" in packed.stdout and "data.sources=" in packed.stdout
    pack_omniglot(OMNIGLOT, str(tmp_path / "omniglot"), image_size=28, channels=3)
    image_folder_tree(tmp_path / "folder", {"train": 6, "val": 5, "test": 5}, per_class=8, size=28)
    pack_image_folder(tmp_path / "folder", str(tmp_path / "images"), image_size=28)
    sources = [str(tmp_path / "md" / "aircraft"), str(tmp_path / "md" / "omniglot_md"), str(tmp_path / "omniglot"),
               str(tmp_path / "images")]
    config = str(Path("configs/meta_dataset_fomaml_all.yaml").resolve())
    run = subprocess.run([*CLI, "train", config, "--run-dir", str(tmp_path / "run"), f"data.sources={json.dumps(sources)}",
                          "data.eval_sources=null", "runtime.gpus_per_worker=0", "model.name=conv4",
                          "model.image_size=28", "model.hidden=8", "model.n_way=12", "task.max_ways_upper_bound=12",
                          "task.max_support_set_size=40", "outer.steps=2", "runtime.meta_batch=4",
                          "runtime.logical_shards=2", "runtime.workers=2", "algorithm.inner_steps=1", "eval.steps=1",
                          "eval.episodes=3", "eval.batch=3", "tracking.enabled=false", "runtime.step_timeout_s=120"],
                         capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    log = (tmp_path / "run" / "train.log").read_text()
    for name in ("aircraft", "omniglot_md", "omniglot", "images"):
        assert f"source {name}: 3 episodes  query acc" in log
    assert "meta-test on 12 held-out episodes (test)" in log

"""Image benchmarks end to end on real class shards made here, in their sources' formats: an
image folder, Omniglot (../shared) upscaled to 84x84 RGB, and a CIFAR-100 directory (CIFAR-FS).
Each is packed, trained for 2 steps through Ray on Conv4 and evaluated; CIFAR-FS goes through
the command line with its shipped config."""

import subprocess
import sys
from pathlib import Path

import pytest
import ray
import torch
from imagesets import image_folder_tree, write_cifar100

from distmeta.config import load_config
from distmeta.data import pack_image_folder, pack_omniglot
from distmeta.runtime.cluster import connect
from distmeta.runtime.run import train

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
OMNIGLOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "omniglot"
BASE = ["task.family=images", "task.way=3", "task.shot=1", "task.query=2", "model.name=conv4",
        "model.n_way=3", "model.in_channels=3", "model.hidden=8", "model.pool=max", "algorithm.name=maml",
        "algorithm.inner_steps=1", "algorithm.vectorize=false", "runtime.meta_batch=4",
        "runtime.logical_shards=2", "outer.steps=2", "tracking.enabled=false", "eval.episodes=6",
        "eval.batch=3", "eval.steps=1", "checkpoint.every=1", "runtime.step_timeout_s=120"]


def test_cifar_fs_packs_and_trains_from_the_command_line(tmp_path):
    write_cifar100(tmp_path / "cifar", per_class=(3, 1))
    cli = [sys.executable, "-m", "distmeta.cli"]
    packed = subprocess.run([*cli, "data", "pack", "cifar-fs", "--root", str(tmp_path / "cifar"), "--out",
                             str(tmp_path / "data/cifar-fs")], capture_output=True, text=True, timeout=120)
    assert packed.returncode == 0, packed.stderr
    assert "train: 64 classes / 256 images" in packed.stdout
    config = str(Path("configs/cifar_fs_5w1s_maml.yaml").resolve())
    run = subprocess.run([*cli, "train", config, "--run-dir", str(tmp_path / "run"), "outer.steps=2",
                          "runtime.meta_batch=2", "runtime.logical_shards=2", "task.query=2",
                          "model.hidden=8", "algorithm.inner_steps=1", "eval.episodes=4", "eval.steps=1",
                          "tracking.enabled=false"], capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "step 2/2" in log and "meta-test" in log


@pytest.fixture(scope="module")
def ray_session():
    session = connect(num_cpus=4, object_store_mb=200)
    yield session
    ray.shutdown()


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    base = tmp_path_factory.mktemp("images")
    tree = image_folder_tree(base / "tree", {"train": 6, "val": 3, "test": 3}, 4, size=24)
    out = {"imagefolder": (str(base / "folder-shards"), 84)}
    pack_image_folder(tree, out["imagefolder"][0], image_size=84)
    if (OMNIGLOT / "omniglot28.npz").is_file() or (OMNIGLOT / "images_background.npz").is_file():
        out["omniglot84"] = (str(base / "omniglot84"), 84)
        pack_omniglot(OMNIGLOT, out["omniglot84"][0], image_size=84, channels=3, limit_classes=5)
    return out


def run(datasets, name, tmp_path, *extra):
    if name not in datasets:
        pytest.skip(f"Omniglot arrays not found at {OMNIGLOT}")
    path, size = datasets[name]
    cfg = load_config(None, [*BASE, f"data.path={path}", f"model.image_size={size}", *extra])
    return train(cfg, run_dir=str(tmp_path / "run"))


@pytest.fixture(scope="module")
def two_workers(ray_session, datasets, tmp_path_factory):
    return run(datasets, "imagefolder", tmp_path_factory.mktemp("w2"), "runtime.workers=2")


@pytest.mark.parametrize("name", ["imagefolder", "omniglot84"])
def test_trains_two_steps_through_ray_and_evaluates(ray_session, datasets, two_workers, name, tmp_path):
    result = two_workers if name == "imagefolder" else run(datasets, name, tmp_path, "runtime.workers=2")
    assert result.step == 2 and len(result.history) == 2
    assert all(torch.isfinite(v).all() for v in result.params.values())
    report = result.evaluation
    assert report is not None and report.episodes == 6
    assert all(0.0 <= row["query_acc"] <= 1.0 for row in report.table())


def test_one_and_two_workers_train_the_same_parameters(ray_session, datasets, two_workers, tmp_path):
    one = run(datasets, "imagefolder", tmp_path, "runtime.workers=1")
    assert all(torch.equal(one.params[k], two_workers.params[k]) for k in one.params)




def test_resnet12_pretrained_by_erm_then_meta_trained(ray_session, datasets, tmp_path):
    """Two runs: multi-task ERM over all training classes (global labels), then MAML on
    ResNet-12 from its body (model.init), checkpointed second order, bf16 (vectorised: bf16 on
    the per-task loop is refused)."""
    resnet = [k for k in BASE if not k.startswith(("model.hidden", "model.pool"))]
    path, size = datasets["imagefolder"]
    common = [*resnet, "model.name=resnet12", "model.channels=[4,6,8,10]", f"data.path={path}",
              f"model.image_size={size}", "runtime.workers=2"]
    pre = train(load_config(None, [*common, "algorithm.name=erm", "task.labels=global", "model.n_way=6"]),
                run_dir=str(tmp_path / "erm"), evaluate_at_end=False)
    meta = train(load_config(None, [*common, f"model.init={tmp_path / 'erm'}", "algorithm.checkpoint_inner=true",
                                    "algorithm.vectorize=true", "runtime.precision=bf16"]), run_dir=str(tmp_path / "maml"))
    assert pre.step == meta.step == 2 and meta.evaluation.episodes == 6
    assert all(torch.isfinite(v).all() for v in meta.params.values())
    assert meta.params["head.weight"].shape == (3, 10) and pre.params["head.weight"].shape == (6, 10)

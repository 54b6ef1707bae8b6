"""What a worker draws and where it computes: DropBlock's masks are a function of (seed, step,
shard) alone, so a shard's gradient does not depend on what the worker computed before and 1
or 2 workers agree bit for bit with ``drop_rate > 0``; a worker asked for a GPU that torch
cannot see is an error naming the key."""

import pytest
import torch
from imagesets import image_folder_tree

from distmeta.config import ConfigError, load_config
from distmeta.data import ShardLayout, pack_image_folder
from distmeta.runtime.worker import MetaWorker, worker_device


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = image_folder_tree(tmp_path_factory.mktemp("src") / "tree", {"train": 8, "val": 3, "test": 3}, 4, size=16)
    out = str(tmp_path_factory.mktemp("shards"))
    pack_image_folder(root, out, image_size=16, layout=ShardLayout(maxcount=4))
    return load_config(None, ["task.family=images", f"data.path={out}", "task.way=3", "task.shot=1", "task.query=2",
                              "model.name=resnet12", "model.in_channels=3", "model.image_size=16",
                              "model.channels=[2,3,4,5]", "model.drop_rate=0.3", "model.block_size=2",
                              "algorithm.vectorize=false", "runtime.meta_batch=4", "runtime.logical_shards=2",
                              "tracking.enabled=false"]).to_dict()


def grads(worker, shard, params, step=0):
    return worker.shard_gradients(params, step, [shard])[0].grads


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_shards_dropblock_masks_do_not_depend_on_what_came_before(config):
    first = MetaWorker(config)
    params = first.rule.init_params(first.model)
    fresh = grads(first, 1, params)
    busy = MetaWorker(config)
    grads(busy, 0, params)
    torch.rand(1000)  # anything else drawn from torch's generator in between
    assert same(grads(busy, 1, params), fresh)
    model = busy.model.train()
    rule = busy.rule
    batch = busy.source.sample(2, 0, 0, 1)
    torch.manual_seed(1)  # the same episodes without the worker's seeding: other masks
    assert not same(rule.meta_gradient(model, params, batch).grads, fresh)


def test_one_and_two_workers_give_the_same_blocks_with_dropblock(config):
    w = MetaWorker(config)
    params = w.rule.init_params(w.model)
    state = (0, params)
    one = MetaWorker(config).compute(0, [0, 1], state, report=False)
    a, b = MetaWorker(config), MetaWorker(config)
    a.compute(0, [1], state)  # a worker that computed something else first
    two = [a.compute(0, [0], state, report=False), b.compute(0, [1], state, report=False)]
    (lo, hi, summed, n), = one[1]
    assert (lo, hi, n) == (0, 2, 4)
    first, second = two[0][1][0][2], two[1][1][0][2]
    assert all(torch.equal(summed[k], first[k] + second[k]) for k in summed)  # the tree adds leaves in order
    assert one[0]["metrics"] == {0: {}, 1: {}}


def test_a_gpu_worker_without_cuda_is_an_error_naming_the_key():
    assert worker_device(0).type == "cpu"
    if torch.cuda.is_available():
        assert worker_device(1).type == "cuda"
        return
    with pytest.raises(ConfigError, match=r"runtime.gpus_per_worker=1: .*no CUDA device"):
        worker_device(1)


def test_a_worker_evaluates_on_its_device_as_the_driver_does(config):
    """The final evaluation runs on a worker when the workers have GPUs: the same numbers."""
    from distmeta.config import validate
    from distmeta.evaluation import evaluate

    worker = MetaWorker(config)
    params = worker.rule.init_params(worker.model)
    here = evaluate(validate(config), params, episodes=4)
    there = worker.evaluate(params, episodes=4)
    assert there.episodes == here.episodes == 4
    assert there.loss == here.loss and there.acc == here.acc

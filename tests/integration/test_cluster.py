"""Three fake nodes on this machine (``ray.cluster_utils.Cluster``, all on 127.0.0.1): a node
removed under a worker mid-run; its shards move and the parameters are still identical."""

import pytest
import ray
import torch
from ray.cluster_utils import Cluster

from distmeta.config import load_config
from distmeta.runtime.run import Callbacks, train

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

BASE = ["model.hidden=[32,32]", "algorithm.inner_steps=3", "algorithm.vectorize=false",
        "runtime.meta_batch=8", "runtime.logical_shards=4", "outer.steps=8", "checkpoint.every=2",
        "tracking.enabled=false", "runtime.step_timeout_s=60", "runtime.workers=2"]
STORE = 200 * 2**20


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": STORE,
                                                      "include_dashboard": False})
    nodes = [c.add_node(num_cpus=2, object_store_memory=STORE) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address)
    yield c, nodes
    ray.shutdown()
    c.shutdown()


def test_cluster_stays_on_loopback(cluster):
    assert all(n["NodeManagerAddress"] == "127.0.0.1" for n in ray.nodes())


def test_removed_node_moves_its_shards_and_result_is_identical(cluster, tmp_path):
    c, nodes = cluster
    cfg = load_config(None, BASE)
    reference = train(cfg, run_dir=str(tmp_path / "ref"), evaluate_at_end=False)
    removed = []

    def remove_a_worker_node(step, runner):
        if step == 3 and not removed:
            worker_nodes = ray.get([a.node_id.remote() for a in runner.pool.actors])
            victim = next(n for n in nodes if n.node_id in worker_nodes)
            c.remove_node(victim, allow_graceful=False)
            removed.append(victim.node_id)

    result = train(cfg, run_dir=str(tmp_path / "run"), evaluate_at_end=False,
                   callbacks=Callbacks(on_dispatch=remove_a_worker_node))
    assert removed
    assert result.step == 8
    assert all(torch.equal(result.params[k], reference.params[k]) for k in reference.params)

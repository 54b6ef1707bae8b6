"""Every rule that learns its inner update, Leap and ProtoNets meta-train through Ray: the
sinusoid's post-adaptation loss ends below its pre-adaptation loss (ProtoNets, which only
classify: Omniglot 5-way 1-shot above chance)."""

from pathlib import Path

import pytest
import ray

from distmeta.config import load_config
from distmeta.runtime.cluster import connect
from distmeta.runtime.run import train

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
SINE = ["task.family=sinusoid", "task.shots=10", "task.query=10", "model.name=mlp", "model.hidden=[40,40]",
        "runtime.meta_batch=10", "runtime.logical_shards=2", "runtime.workers=2", "outer.steps=300",
        "tracking.enabled=false", "eval.episodes=100", "checkpoint.every=1000"]  # eval: the trained inner steps
RULES = {
    "metasgd": ["algorithm.name=metasgd", "algorithm.inner_lr=0.02"],
    "maml++": ["algorithm.name=maml", "algorithm.inner_lr=0.02", "algorithm.inner_steps=2", "algorithm.lslr=true",
               "algorithm.msl_steps=150", "algorithm.first_order_steps=50"],
    "kfo": ["algorithm.name=kfo", "algorithm.inner_lr=0.02"],
    "leap": ["algorithm.name=leap", "algorithm.inner_lr=0.02", "algorithm.inner_steps=5"],
}
OMNIGLOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "omniglot"


@pytest.fixture(scope="module")
def ray_session():
    session = connect(num_cpus=4, object_store_mb=200)
    yield session
    ray.shutdown()


@pytest.mark.parametrize("rule", sorted(RULES))
def test_the_rule_meta_trains_the_sinusoid_through_ray(ray_session, rule, tmp_path):
    result = train(load_config(None, [*SINE, *RULES[rule]]), run_dir=str(tmp_path / "run"))
    curve = result.evaluation.loss
    assert curve[-1] < 0.75 * curve[0], curve


@pytest.mark.skipif(not (OMNIGLOT / "omniglot28.npz").is_file(), reason=f"Omniglot arrays not found at {OMNIGLOT}")
def test_protonets_learn_omniglot_through_ray(ray_session, tmp_path):
    cfg = load_config(None, [
        "task.family=omniglot", f"task.root={OMNIGLOT}", "task.query=5", "model.name=conv4", "model.hidden=32",
        "model.pool=stride", "algorithm.name=protonet", "algorithm.vectorize=false", "runtime.meta_batch=8",
        "runtime.logical_shards=2", "outer.steps=60", "tracking.enabled=false", "eval.episodes=100",
        "checkpoint.every=1000"])
    result = train(cfg, run_dir=str(tmp_path / "run"))
    assert result.evaluation.acc[-1] > 0.5, result.evaluation.acc

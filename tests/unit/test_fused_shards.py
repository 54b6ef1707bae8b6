"""Several logical shards in one engine call (``Rule.shard_gradients``): each shard's summed
gradient and metrics are bit for bit what the shard gives alone, for every rule, ``adapt:
all`` and ``head``; the rules and models that cannot keep that (shared parameters, grouped
convolutions, random draws, one task a shard) run one call per shard, which is the same."""

import numpy as np
import pytest
import torch

from distmeta.algorithms import ALGORITHMS
from distmeta.models import conv4, mlp
from distmeta.models.resnet12 import resnet12
from distmeta.tasks import ImageClasses, Sinusoid

FUSING = {"maml", "fomaml", "imaml", "reptile", "leap"}
"""The rules whose every task sum goes through the chunk: they fuse when everything adapts."""


def shards(family, n=3, tasks=2):
    if family == "sinusoid":
        source = Sinusoid(shots=5, query=5)
    else:
        images = np.random.default_rng(0).random((12, 6, 16, 16)).astype(np.float32)
        source = ImageClasses(images, way=3, shot=1, query=2, rotations=True)
    return [source.sample(tasks, 7, 3, s) for s in range(n)]


def model_of(family):
    torch.manual_seed(0)
    return mlp(hidden=(16, 16)) if family == "sinusoid" else conv4(3, image_size=16, hidden=8, pool="stride")


def rule_of(name, adapt, **extra):
    hyper = {} if name in ("r2d2", "protonet") else {"adapt": adapt, "inner_lr": 0.1}
    if name in ("maml", "fomaml", "imaml", "reptile", "metasgd", "kfo", "leap"):
        hyper["inner_steps"] = 2
    return ALGORITHMS[name](**hyper, **extra)


def assert_same(got, alone):
    assert len(got) == len(alone)
    for a, b in zip(got, alone, strict=True):
        assert a.n_tasks == b.n_tasks and a.grads.keys() == b.grads.keys()
        for k in a.grads:
            assert torch.equal(a.grads[k], b.grads[k]), k
        assert a.metrics == b.metrics


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
@pytest.mark.parametrize("adapt", ["all", "head"])
@pytest.mark.parametrize("family", ["sinusoid", "images"])
def test_shards_in_one_call_are_bit_identical_to_each_alone(name, adapt, family):
    if ALGORITHMS[name].classifies_only and family == "sinusoid":
        pytest.skip(f"{name} classifies; the sinusoid is regression")
    model, batches, rule = model_of(family), shards(family), rule_of(name, adapt)
    params = rule.init_params(model)
    group = rule.fused_group(model, params, batches)
    assert group == (3 if name in FUSING and adapt == "all" and family == "sinusoid" else 0)
    for metrics in (True, False):
        together = rule.shard_gradients(model, params, batches, 3, metrics)
        assert_same(together, [rule.shard_gradients(model, params, [b], 3, metrics)[0] for b in batches])
        for a, b in zip(together, [rule.meta_gradient(model, params, b, 3, metrics) for b in batches], strict=True):
            for k in a.grads:  # the plain call: the same maths (here bit for bit too, not promised)
                torch.testing.assert_close(a.grads[k], b.grads[k], rtol=1e-5, atol=1e-6)
            assert a.metrics.keys() == b.metrics.keys()
            for k in a.metrics:
                assert a.metrics[k] == pytest.approx(b.metrics[k], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("options", [{"checkpoint_inner": True}, {"msl_steps": 5}, {"first_order_steps": 2}])
def test_maml_options_fuse_bit_identically(options):
    model, batches = model_of("sinusoid"), shards("sinusoid", n=4)
    rule = rule_of("maml", "all", **options)
    params = rule.init_params(model)
    assert rule.fused_group(model, params, batches) == 4
    assert_same(rule.shard_gradients(model, params, batches, 1),
                [rule.shard_gradients(model, params, [b], 1)[0] for b in batches])


def test_chunk_size_bounds_the_tasks_of_one_call():
    model, batches = model_of("sinusoid"), shards("sinusoid", n=5, tasks=2)
    for chunk, group in ((None, 5), (4, 2), (5, 2), (1, 0)):
        rule = rule_of("maml", "all", chunk_size=chunk)
        params = rule.init_params(model)
        assert rule.fused_group(model, params, batches) == group
        assert_same(rule.shard_gradients(model, params, batches), [rule.meta_gradient(model, params, b) for b in batches]) \
            if group == 0 else assert_same(rule.shard_gradients(model, params, batches),
                                          [rule.shard_gradients(model, params, [b])[0] for b in batches])


def test_what_does_not_fuse():
    rule = rule_of("maml", "all")
    batches = shards("sinusoid")
    images = shards("images")
    conv = model_of("images")
    assert rule.fused_group(conv, rule.init_params(conv), images) == 0  # grouped convolutions
    dropblock = resnet12(3, in_channels=3, image_size=16, channels=(2, 3, 4, 5), drop_rate=0.3, block_size=2)
    assert rule.fused_group(dropblock, rule.init_params(dropblock), images) == 0  # draws random masks
    model = model_of("sinusoid")
    params = rule.init_params(model)
    assert rule_of("maml", "all", lslr=True).fused_group(model, rule_of("maml", "all", lslr=True).init_params(model),
                                                         batches) == 0  # rule.* parameters are shared by all tasks
    assert rule_of("maml", "all", vectorize=False).fused_group(model, params, batches) == 0
    uneven = [*shards("sinusoid", n=2), shards("sinusoid", n=1, tasks=3)[0]]
    assert rule.fused_group(model, params, uneven) == 0
    assert rule.fused_group(model, params, shards("sinusoid", tasks=1)) == 0  # one task: a plain matrix product
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert rule.fused_group(model, params, batches) == 0
